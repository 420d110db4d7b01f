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


def test_argv_items_hold_plain_characters_like_a_command_line() -> None:
    POLICY.check(None, ["bin/ok.sh", "--name=value", "two words", "a:b,c@d%e+f", "'q'"])
    for item in ("; rm -rf /", "$(x)", "`y`", "> /etc/passwd", "--eval=$(shell id)", "a\nb", "é"):
        with pytest.raises(CommandNotAllowed, match="argv items"):
            POLICY.check(None, ["bin/ok.sh", item])


#: what the attack of the issue set, each with a program the policy allows: MAKEFLAGS (with
#: SHELL) made make run `id`, JDK_JAVA_OPTIONS did the same for java; the rest change what a
#: program reads or where it connects
LEAKY_ENV = {
    "MAKEFLAGS": "--eval=x",
    "SHELL": "/tmp/x",
    "JDK_JAVA_OPTIONS": "-XX:OnOutOfMemoryError=id",
    "HOME": "/tmp/x",
    "XDG_CONFIG_HOME": "/tmp/x",
    "http_proxy": "http://evil:3128",
    "https_proxy": "http://evil:3128",
    "OPENSSL_CONF": "/tmp/x.cnf",
    "LUA_INIT": "@/tmp/x.lua",
    "LESSOPEN": "id",
    "VIMINIT": "x",
    "TMPDIR": "/tmp/x",
    "TARGET": "staging",
}


@pytest.mark.parametrize(("name", "value"), LEAKY_ENV.items())
def test_under_a_policy_no_env_name_is_allowed_by_default(name: str, value: str) -> None:
    with pytest.raises(CommandNotAllowed, match="JOBRUNNER_ALLOWED_ENV"):
        POLICY.check(None, ["/usr/bin/make", "all"], {name: value})


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
        # the and a second attack's names, with `MAKEFLAGS,*` allowed
        "JDK_JAVA_OPTIONS",
        "MAKEFILES",
        "MAKEFLAGS",
        "SHELL",
        "HOME",
        "XDG_CONFIG_HOME",
        "http_proxy",
        "HTTPS_PROXY",
        "OPENSSL_CONF",
        "LUA_INIT",
        "LESSOPEN",
        "VIMINIT",
        "TMPDIR",
    ],
)
def test_a_wildcard_never_allows_what_changes_the_code_that_runs(name: str) -> None:
    anything = CommandPolicy.from_patterns(["bin/*"], allowed_env=["*"])
    with pytest.raises(CommandNotAllowed, match=name):
        anything.check("bin/ok.sh", None, {name: "x"})
    anything.check("bin/ok.sh", None, {"TARGET": "staging"})
    exact = CommandPolicy.from_patterns(["bin/*"], allowed_env=[name])
    exact.check("bin/ok.sh", None, {name: "x"})  # the operator named it: allowed


def test_an_env_allow_list_allows_only_what_it_names() -> None:
    policy = CommandPolicy.from_patterns(["bin/*"], allowed_env=["APP_*", "TARGET"])
    policy.check(None, ["bin/ok.sh"], {"APP_MODE": "x", "TARGET": "staging"})
    for name in ("OTHER", "APP", "XAPP_MODE", "TARGETS"):
        with pytest.raises(CommandNotAllowed):
            policy.check(None, ["bin/ok.sh"], {name: "x"})


@pytest.mark.parametrize("value", ["--eval=$(shell id)", "`id`", "a;b", "a\nb", "x|y", "~/x"])
def test_env_values_hold_plain_characters_like_a_command_line(value: str) -> None:
    policy = CommandPolicy.from_patterns(["bin/*"], allowed_env=["APP_*"])
    with pytest.raises(CommandNotAllowed, match="env values"):
        policy.check(None, ["bin/ok.sh"], {"APP_FLAGS": value})
    policy.check(None, ["bin/ok.sh"], {"APP_FLAGS": "--level=3 -v a:b,c@d%e+f"})


def test_a_folder_pattern_and_no_policy() -> None:
    CommandPolicy.from_patterns(["bin/"]).check("bin/ok.sh", None)
    open_policy = CommandPolicy.from_patterns([])
    assert not open_policy.active
    open_policy.check("anything; at all", None, {"PATH": "/tmp", "MAKEFLAGS": "$(x)"})
    open_policy.check(None, ["sh", "-c", "$(id)"], {"LD_PRELOAD": "/tmp/x.so"})
