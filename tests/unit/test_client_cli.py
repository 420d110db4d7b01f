"""The client commands' usage errors, caught before any request (exit code 2, like click)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from jobrunner.cli import main

# nothing listens there: a command that got past its usage checks would fail with exit code 1
NOWHERE = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit"], "no command: give it after --"),
        (["submit", "--shell", "make", "--", "make"], "not both"),
        (["submit", "--follow", "--json", "--", "true"], "does not go with --json"),
        (["submit", "--at", "tomorrow", "--", "true"], "Invalid value for '--at'"),
        (["submit", "--timeout", "1.5h", "--", "true"], "Invalid value for '--timeout'"),
        (["submit", "--priority", "high", "--", "true"], "Invalid value for '-p' / '--priority'"),
        (["submit", "--retries", "-1", "--", "true"], "Invalid value for '--retries'"),
        (["submit", "--env", "=1", "--", "true"], "Invalid value for '--env': '=1' has no"),
        (["submit", "--env", "NOT_SET_HERE_X", "--", "true"], "NOT_SET_HERE_X is not set here"),
        (["submit", "--url", "ftp://x", "--", "true"], "must start with http:// or https://"),
        (["list", "--state", "bogus"], "Invalid value for '--state'"),
        (["list", "--limit", "0"], "Invalid value for '-n' / '--limit'"),
        (["show", "abc"], "Invalid value for 'ID'"),
        (["wait", "1", "--follow", "--json"], "does not go with --json"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args, env={"JOBRUNNER_URL": NOWHERE})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_the_server_roles_are_still_there() -> None:
    assert {"web", "worker", "migrate", "release"} <= set(main.commands)
    assert {"submit", "wait", "list", "show", "output", "cancel", "retry"} <= set(main.commands)
