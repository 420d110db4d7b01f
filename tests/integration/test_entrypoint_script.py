"""The image's entrypoint (docker/entrypoint.sh), run directly by /bin/sh, no container: role
names and RUN_MODE start their role, and anything else runs as the command it is, as
`docker run IMAGE bin/rake db:migrate` did with the original (its entrypoint did `exec "$@"`).
A stand-in `jobrunner` on PATH prints what it was asked to do. tests/container/ runs the same
entrypoint inside the image."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[2] / "docker" / "entrypoint.sh"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A JOB_HOME with a `bin/rake`, and a stand-in `jobrunner` first on PATH."""
    tools = tmp_path / "tools"
    (tmp_path / "bin").mkdir()
    tools.mkdir()
    scripts = {
        tmp_path / "bin" / "rake": '#!/bin/sh\necho "rake $*"\n',
        tools / "jobrunner": (
            '#!/bin/sh\necho "jobrunner $*"\n'
            'if [ "$1" = migrate ] && [ -n "$FAIL_MIGRATE" ]; then exit 1; fi\n'
        ),
    }
    for path, text in scripts.items():
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def entrypoint(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{home / 'tools'}:{os.environ['PATH']}"
    return subprocess.run(
        ["/bin/sh", str(ENTRYPOINT), *args],
        cwd=home,
        env={"PATH": path, "HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_arguments_that_are_no_role_run_as_a_command(home: Path) -> None:
    assert entrypoint(home, "bin/rake", "db:migrate").stdout == "rake db:migrate\n"
    assert entrypoint(home, "echo", "a  b", "c").stdout == "a  b c\n"  # arguments kept whole
    assert entrypoint(home, "sh", "-c", "exit 7").returncode == 7
    assert entrypoint(home, "sh", "-c", "echo $RUN_MODE", RUN_MODE="worker").stdout == "worker\n"
    missing = entrypoint(home, "no-such-program")
    assert missing.returncode == 127 and missing.stdout == ""


def test_the_command_replaces_the_entrypoint(home: Path) -> None:
    """exec: the command gets the entrypoint's pid, so that signals (docker stop) reach it."""
    proc = subprocess.Popen(
        ["/bin/sh", str(ENTRYPOINT), "sh", "-c", "echo $$"],
        cwd=home,
        stdout=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ["PATH"]},
    )
    out, _ = proc.communicate(timeout=30)
    assert int(out) == proc.pid


@pytest.mark.parametrize(
    ("args", "run_mode", "runs"),
    [
        (["web"], None, "jobrunner web"),
        (["http_server"], None, "jobrunner web"),
        ([], None, "jobrunner web"),
        ([], "http_server", "jobrunner web"),
        (["worker"], None, "jobrunner worker"),
        (["delayed_job"], None, "jobrunner worker"),
        ([], "delayed_job", "jobrunner worker"),
        (["web"], "worker", "jobrunner web"),  # an argument wins over RUN_MODE
        (["worker", "--extra"], None, "jobrunner worker --extra"),
        (["release"], None, "jobrunner migrate"),
        ([], "migrate", "jobrunner migrate"),
    ],
)
def test_role_names_and_run_mode_start_their_role(
    home: Path, args: list[str], run_mode: str | None, runs: str
) -> None:
    result = entrypoint(home, *args, **({"RUN_MODE": run_mode} if run_mode else {}))
    assert result.returncode == 0, result.stderr
    assert result.stdout == runs + "\n"


def test_an_unknown_run_mode_is_refused(home: Path) -> None:
    result = entrypoint(home, RUN_MODE="nonsense")
    assert result.returncode == 2
    assert "RUN_MODE=nonsense" in result.stderr and result.stdout == ""


def test_release_gives_up_after_the_startup_timeout(home: Path) -> None:
    result = entrypoint(home, "release", FAIL_MIGRATE="1", JOBRUNNER_STARTUP_TIMEOUT="0")
    assert result.returncode == 1
    assert "giving up" in result.stderr
