"""The command policy: which programs a job may run (`JOBRUNNER_ALLOWED_COMMANDS`).

Patterns name programs as jobs write them, relative to `JOB_HOME` or absolute: `bin/*` (any
program directly in `bin/`; `bin/` means the same), `bin/**` (anywhere below it), `/usr/bin/make`,
`make`. `*` and `?` do not cross a `/`. A program path is normalised first and may not climb out
with `..`.

With a policy set, a shell command line must not be able to run anything but its program: it
may hold only a program and plain arguments (letters, digits, spaces, quotes and `-_./:,@%+=`),
with no variable assignment in front. Every shell operator, expansion or redirection (`;`, `&`,
`|`, `$`, backticks, `<`, `>`, globs, `~`, newlines, backslashes) is refused with a 403 that
says which character. The same rule holds for every `argv` item and every `env` value: an
allowed program cannot be handed `--eval=$(shell id)` as an argument or in a variable.

The job's `env` names must be allowed explicitly (`JOBRUNNER_ALLOWED_ENV`, patterns; none by
default): a deny-list always misses one (`MAKEFLAGS`, `JDK_JAVA_OPTIONS`, `OPENSSL_CONF`,
`LESSOPEN`, ...). The variables that change which code runs (`DENIED_ENV`: `PATH`, `LD_*`,
`PYTHON*`, ...) are not let through by a wildcard either: only by their exact name.
Without a policy nothing of this applies: whoever may run any command may set any variable.
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
#: environment variables that change what code runs, what it reads or where it connects: under
#: a policy, a wildcard of JOBRUNNER_ALLOWED_ENV never allows them, only their exact name does.
#: This list is a second line only (a list always misses one): name what jobs may set, prefer
#: prefixes of your own (`APP_*`) to wide wildcards (SECURITY.md).
DENIED_ENV = (
    "HOME",
    "SHELL",
    "TMPDIR",
    "TMP",
    "TEMP",
    "XDG_*",
    "MAKE*",
    "JDK_JAVA_OPTIONS",
    "JAVA_OPTS",
    "*_proxy",
    "*_PROXY",
    "OPENSSL_*",
    "SSL_*",
    "CURL_*",
    "WGETRC",
    "LUA_*",
    "LESS*",
    "VIMINIT",
    "EXINIT",
    "MYVIMRC",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "MANPAGER",
    "PROMPT_COMMAND",
    "INPUTRC",
    "ZDOTDIR",
    "NPM_CONFIG_*",
    "npm_config_*",
    "PIP_*",
    "CARGO_*",
    "RUSTC_WRAPPER",
    "GOFLAGS",
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "RUSTFLAGS",
    "NLSPATH",
    "TERMINFO*",
    "SUDO_ASKPASS",
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


PLAIN_RULE = "letters, digits, spaces, quotes and -_./:,@%+="


def _first_unplain(text: str) -> str | None:
    return next((char for char in text if char not in PLAIN_CHARACTERS), None)


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
    #: the names JOBRUNNER_ALLOWED_ENV lists exactly (no wildcard)
    named_env: frozenset[str] = frozenset()

    @classmethod
    def from_patterns(
        cls, programs: Iterable[str], allowed_env: Iterable[str] = ()
    ) -> CommandPolicy:
        allowed = tuple(allowed_env)
        return cls(
            programs=tuple(_glob(p) for p in programs),
            allowed_env=tuple(_env_glob(p) for p in allowed),
            denied_env=tuple(_env_glob(p) for p in DENIED_ENV),
            named_env=frozenset(p for p in allowed if "*" not in p),
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
        if argv:
            for number, item in enumerate(argv):
                bad = _first_unplain(item)
                if bad is not None:
                    raise CommandNotAllowed(
                        f"under the command policy argv items may hold only {PLAIN_RULE}, "
                        f"not {bad!r} (item {number})"
                    )
            program = argv[0]
        else:
            program = self._shell_program(command or "")
        normal = normalise_program(program)
        if normal is None or not any(p.match(normal) for p in self.programs):
            raise CommandNotAllowed(
                f"program {program[:200]!r} is not allowed by the command policy "
                "(JOBRUNNER_ALLOWED_COMMANDS)"
            )
        for name, value in (env or {}).items():
            self._check_env(name, value)

    def env_allowed(self, name: str) -> bool:
        """Whether a job may set `name` under this policy: allowed by a pattern of
        JOBRUNNER_ALLOWED_ENV, and by its exact name if it changes what code runs."""
        if any(p.match(name) for p in self.denied_env):
            return name in self.named_env
        return any(p.match(name) for p in self.allowed_env)

    def _check_env(self, name: str, value: str) -> None:
        if not self.env_allowed(name):
            raise CommandNotAllowed(
                f"env variable {name[:64]!r} is not allowed by the command policy: the "
                "variables jobs may set are listed in JOBRUNNER_ALLOWED_ENV"
            )
        bad = _first_unplain(value)
        if bad is not None:
            raise CommandNotAllowed(
                f"under the command policy env values may hold only {PLAIN_RULE}, not {bad!r} "
                f"(in {name[:64]})"
            )

    @staticmethod
    def _shell_program(line: str) -> str:
        bad = _first_unplain(line)
        if bad is not None:
            raise CommandNotAllowed(
                f"under the command policy a shell command line may hold only a program and "
                f"plain arguments ({PLAIN_RULE}), not {bad!r}: send argv instead"
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
