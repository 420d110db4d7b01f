"""The command policy against every bypass we could think of."""

from __future__ import annotations

import pytest

from service.policy import CommandNotAllowed, CommandPolicy

POLICY = CommandPolicy.from_patterns(["bin/*", "/usr/bin/make", "tools/**"])

ALLOWED_LINES = [
    "bin/ok.sh",
    "bin/ok.sh --name=value 42 a:b,c@d%e+f",
    "./bin/ok.sh",
    "bin//ok.sh",
    "bin/./ok.sh",
    '"bin/ok.sh" "two words" \'single quoted\'',
    "bin/ok.sh\targ",
    "/usr/bin/make test",
    "tools/deep/er/x.py",
]

BYPASS_LINES = [
    "bin/ok.sh; rm -rf /",
    "bin/ok.sh && rm -rf /",
    "bin/ok.sh || rm -rf /",
    "bin/ok.sh | sh",
    "bin/ok.sh & rm -rf /",
    "bin/ok.sh $(rm -rf /)",
    "bin/ok.sh `rm -rf /`",
    'bin/ok.sh "$(rm -rf /)"',
    "bin/ok.sh ${IFS}x",
    "bin/ok.sh $HOME",
    "bin/ok.sh > /etc/passwd",
    "bin/ok.sh < /etc/shadow",
    "bin/ok.sh 2>&1",
    "bin/ok.sh\nrm -rf /",
    "bin/ok.sh\rrm",
    "bin/ok.sh \\; rm",
    "bin/ok.sh *",
    "bin/ok.sh ~",
    "bin/ok.sh {a,b}",
    "bin/ok.sh #comment",
    "bin/ok.sh 'a;b'",
    "bin/ok.sh ! x",
    "(bin/ok.sh)",
    "{ bin/ok.sh; }",
    "LD_PRELOAD=/tmp/x.so bin/ok.sh",
    "PATH=/tmp bin/ok.sh",
    "bin/../../bin/sh -c x",
    "bin/../x.sh",
    "../bin/ok.sh",
    "/bin/sh -c 'bin/ok.sh'",
    "sh bin/ok.sh",
    "eval bin/ok.sh",
    "exec bin/ok.sh",
    ". bin/ok.sh",
    "env bin/ok.sh",
    "bin/sub/deeper.sh",
    "bin",
    "bin/",
    "binx/ok.sh",
    "/usr/bin/make2",
    "'bin/ok.sh",
    "bin/\u043ek.sh",  # a Cyrillic o
]


@pytest.mark.parametrize("line", ALLOWED_LINES)
def test_plain_lines_of_allowed_programs_pass(line: str) -> None:
    POLICY.check(line, None)


@pytest.mark.parametrize("line", BYPASS_LINES)
def test_every_bypass_attempt_is_refused(line: str) -> None:
    with pytest.raises(CommandNotAllowed) as caught:
        POLICY.check(line, None)
    assert caught.value.status_code == 403
    assert caught.value.message


@pytest.mark.parametrize(
    "argv",
    [
        ["/bin/sh", "-c", "bin/ok.sh"],
        ["bin/../../../bin/sh"],
        ["sh", "bin/ok.sh"],
        ["bin/sub/x.sh"],
        ["tools/../bin/../../etc/x"],
    ],
)
def test_argv_programs_are_checked(argv: list[str]) -> None:
    with pytest.raises(CommandNotAllowed):
        POLICY.check(None, argv)


def test_argv_arguments_are_free_since_no_shell_reads_them() -> None:
    POLICY.check(None, ["bin/ok.sh", "; rm -rf /", "$(x)", "`y`", "> /etc/passwd"])


@pytest.mark.parametrize(
    "name",
    [
        "PATH",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "BASH_ENV",
        "PYTHONPATH",
        "IFS",
        "NODE_OPTIONS",
        "GIT_SSH_COMMAND",
        "JOBRUNNER_WORKER",
        "PERL5OPT",
    ],
)
def test_env_that_changes_what_code_runs_is_refused(name: str) -> None:
    with pytest.raises(CommandNotAllowed, match=name):
        POLICY.check("bin/ok.sh", None, {name: "x"})
    POLICY.check("bin/ok.sh", None, {"TARGET": "staging"})


def test_an_env_allow_list_narrows_further() -> None:
    policy = CommandPolicy.from_patterns(["bin/*"], allowed_env=["APP_*"])
    policy.check(None, ["bin/ok.sh"], {"APP_MODE": "x"})
    with pytest.raises(CommandNotAllowed):
        policy.check(None, ["bin/ok.sh"], {"TARGET": "x"})


def test_a_folder_pattern_and_no_policy() -> None:
    CommandPolicy.from_patterns(["bin/"]).check("bin/ok.sh", None)
    open_policy = CommandPolicy.from_patterns([])
    assert not open_policy.active
    open_policy.check("anything; at all", None, {"PATH": "/tmp"})
