"""The command policy: which programs a job may run (`JOBRUNNER_ALLOWED_COMMANDS`).

Patterns name programs as jobs write them, relative to `JOB_HOME` or absolute: `bin/*` (any
program directly in `bin/`; `bin/` means the same), `bin/**` (anywhere below it), `/usr/bin/make`,
`make`. `*` and `?` do not cross a `/`. A program path is normalised first and may not climb out
with `..`.

With a policy set, a shell command line must not be able to run anything but its program: it
may hold only a program and plain arguments (letters, digits, spaces, quotes and `-_./:,@%+=`),
with no variable assignment in front. Every shell operator, expansion or redirection (`;`, `&`,
`|`, `$`, backticks, `<`, `>`, globs, `~`, newlines, backslashes) is refused with a 403 that
says which character; clients send `argv` for anything else. The job's `env` may not set the
variables that change which code a program loads (`PATH`, `LD_*`, `BASH_ENV`, `PYTHON*`, ...);
`JOBRUNNER_ALLOWED_ENV` narrows it further to an allow-list.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from service.errors import ApiError

PLAIN_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \t'\"_./:,@%+=-"
)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
#: environment variables a job may not set under a policy: they change what code runs
DENIED_ENV = (
    "PATH",
    "LD_*",
    "DYLD_*",
    "BASH_ENV",
    "ENV",
    "BASH_FUNC_*",
    "IFS",
    "CDPATH",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "GLOBIGNORE",
    "PYTHON*",
    "PERL5*",
    "PERLLIB",
    "RUBY*",
    "GEM_*",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "CLASSPATH",
    "GCONV_PATH",
    "LOCPATH",
    "HOSTALIASES",
    "GIT_*",
    "SSH_ASKPASS",
    "JOBRUNNER_*",
)


class CommandNotAllowed(ApiError):
    """This command is not allowed by the command policy."""

    status_code = 403


def _glob(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("/"):
        pattern += "*"
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    wildcard = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcard.get(part, re.escape(part)) for part in parts) + r"\Z")


def _env_glob(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(r"\*", ".*") + r"\Z")


def normalise_program(program: str) -> str | None:
    """The program path as the policy compares it; None if it climbs out with `..`."""
    if "/" not in program:
        return program
    normal = posixpath.normpath(program)
    if normal == ".." or normal.startswith("../") or "/../" in normal:
        return None
    return normal


@dataclass(frozen=True)
class CommandPolicy:
    programs: tuple[re.Pattern[str], ...]
    allowed_env: tuple[re.Pattern[str], ...]
    denied_env: tuple[re.Pattern[str], ...]

    @classmethod
    def from_patterns(
        cls, programs: Iterable[str], allowed_env: Iterable[str] = ()
    ) -> CommandPolicy:
        return cls(
            programs=tuple(_glob(p) for p in programs),
            allowed_env=tuple(_env_glob(p) for p in allowed_env),
            denied_env=tuple(_env_glob(p) for p in DENIED_ENV),
        )

    @property
    def active(self) -> bool:
        return bool(self.programs)

    def check(
        self, command: str | None, argv: list[str] | None, env: Mapping[str, str] | None = None
    ) -> None:
        """Raise CommandNotAllowed unless the job may run under this policy."""
        if not self.active:
            return
        program = argv[0] if argv else self._shell_program(command or "")
        normal = normalise_program(program)
        if normal is None or not any(p.match(normal) for p in self.programs):
            raise CommandNotAllowed(
                f"program {program[:200]!r} is not allowed by the command policy "
                "(JOBRUNNER_ALLOWED_COMMANDS)"
            )
        for name in env or {}:
            if any(p.match(name) for p in self.denied_env) or (
                self.allowed_env and not any(p.match(name) for p in self.allowed_env)
            ):
                raise CommandNotAllowed(
                    f"env variable {name[:64]!r} may not be set under the command policy"
                )

    @staticmethod
    def _shell_program(line: str) -> str:
        bad = next((char for char in line if char not in PLAIN_CHARACTERS), None)
        if bad is not None:
            raise CommandNotAllowed(
                f"under the command policy a shell command line may hold only a program and "
                f"plain arguments (letters, digits, spaces, quotes and -_./:,@%+=), not {bad!r}: "
                "send argv instead"
            )
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise CommandNotAllowed(f"the command line does not parse: {exc}") from None
        if not words:
            raise CommandNotAllowed("the command line names no program")
        if ASSIGNMENT.match(words[0]):
            raise CommandNotAllowed(
                "under the command policy a command line may not start with a variable "
                "assignment: send env instead"
            )
        return words[0]
