"""`jobrunner dev` as a person uses it: one process on a SQLite file, stopped and started again.

Every test starts its own `jobrunner dev` on a SQLite file of its own and a free port.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    JOBRUNNER,
    PROCESS_DEADLINE,
    Api,
    Process,
    processes_with,
    start_dev,
    stop_all,
    wait_for,
)


@pytest.fixture
def started(log_dir: Path) -> Iterator[list[Process]]:
    """Processes to stop at the end of the test, whatever happens in it."""
    processes: list[Process] = []
    yield processes
    stop_all(processes)


def rows(db: Path) -> dict[int, tuple[str, int]]:
    """(state, attempts) of every job, read from the SQLite file itself."""
    with sqlite3.connect(db) as conn:
        return {
            job_id: (state, attempts)
            for job_id, state, attempts in conn.execute("SELECT id, state, attempts FROM jobs")
        }


def test_jobs_left_queued_run_at_the_next_start(
    dev_env: dict[str, str], log_dir: Path, tmp_path: Path, started: list[Process]
) -> None:
    db = tmp_path / "jobs.sqlite3"
    first, url = start_dev(dev_env, log_dir, db, WORKER_THREADS="1")
    started.append(first)
    with Api(url) as api:
        # one thread, busy: the other jobs wait; the blocker runs last when started again
        blocker = api.submit(command="sleep 60", priority=5)
        api.wait(blocker["id"], {"running"})
        waiting = [api.submit(command=f"echo job {n}")["id"] for n in range(3)]
    assert first.stop() in (0, -signal.SIGTERM)  # it ended by itself, within the grace
    assert "job handed back" in first.output()
    # the stop handed the running job back (the attempt does not count); nothing ran meanwhile
    assert rows(db) == {blocker["id"]: ("queued", 0), **{i: ("queued", 0) for i in waiting}}

    second, url = start_dev(dev_env, log_dir, db, WORKER_THREADS="1")
    started.append(second)
    with Api(url) as api:
        for n, job_id in enumerate(waiting):
            job = api.wait(job_id)
            assert (job["state"], job["attempts"]) == ("succeeded", 1)
            assert job["locked_by"].endswith(f":dev-{second.pid}")
            assert api.output(job_id) == f"job {n}\n"
        api.wait(blocker["id"], {"running"})
        assert api.http.post(f"/jobs/{blocker['id']}/cancel").status_code == 202
        assert api.wait(blocker["id"])["state"] == "cancelled"


def test_running_jobs_of_a_killed_dev_are_retried_or_failed_after_the_lease(
    dev_env: dict[str, str], log_dir: Path, tmp_path: Path, started: list[Process]
) -> None:
    db = tmp_path / "jobs.sqlite3"
    marker = f"sleep 6{uuid.uuid4().int % 1000:03d}"
    first, url = start_dev(dev_env, log_dir, db)
    started.append(first)
    with Api(url) as api:
        retried = api.submit(
            command=f'[ "$JOBRUNNER_ATTEMPT" = 1 ] && {marker}; echo "attempt $JOBRUNNER_ATTEMPT"',
            max_retries=1,
        )
        failed = api.submit(command=f"{marker} & {marker}", max_retries=0)
        for job in (retried, failed):
            api.wait(job["id"], {"running"})
        wait_for(
            lambda: len(processes_with(marker)) >= 3, timeout=PROCESS_DEADLINE, what="the commands"
        )
    first.proc.kill()  # SIGKILL: no shutdown at all; the commands run on in their sessions
    first.proc.wait(timeout=10)
    assert rows(db) == {retried["id"]: ("running", 1), failed["id"]: ("running", 1)}

    second, url = start_dev(dev_env, log_dir, db)
    started.append(second)
    # its reaper kills the orphans at once (if no other live worker on this host did it first);
    # its sweeper gives up their attempts after the lease timeout (JOBRUNNER_LEASE_TIMEOUT=5)
    wait_for(
        lambda: processes_with(marker) == [], timeout=PROCESS_DEADLINE, what="the orphans to die"
    )
    with Api(url) as api:
        job = api.wait(retried["id"], timeout=30)
        assert (job["state"], job["attempts"]) == ("succeeded", 2)
        output = api.output(retried["id"])
        assert "--- jobrunner: attempt 2 ---" in output and output.endswith("attempt 2\n")
        job = api.wait(failed["id"], timeout=30)
        assert (job["state"], job["attempts"], job["last_error"]) == ("failed", 1, "worker lost")


def _token_lines(output: str) -> tuple[str, str]:
    token = re.search(r"API token \(also in (.+)\): (jr_\S+)", output)
    assert token, output
    return token.group(1), token.group(2)


def test_a_local_token_is_created_then_reused(
    dev_env: dict[str, str], log_dir: Path, tmp_path: Path, started: list[Process]
) -> None:
    env = {k: v for k, v in dev_env.items() if k != "JOBRUNNER_API_TOKENS"}
    db = tmp_path / "jobs.sqlite3"
    first, url = start_dev(env, log_dir, db)
    started.append(first)
    token_file, token = _token_lines(first.output())
    assert Path(token_file) == tmp_path / ".jobrunner" / "dev-token"
    assert Path(token_file).read_text().strip() == token
    assert stat.S_IMODE(Path(token_file).stat().st_mode) == 0o600
    with Api(url, token=None) as anonymous:
        assert anonymous.http.get("/jobs").status_code == 401
    if shutil.which("curl"):  # the curl line it prints works as printed
        line = next(line for line in first.output().splitlines() if line.startswith("try:"))
        posted = subprocess.run(
            ["/bin/sh", "-c", line.removeprefix("try:")], capture_output=True, text=True
        )
        assert '"state":"queued"' in posted.stdout, posted
        with Api(url, token=token) as api:
            job_id = api.http.get("/jobs").json()[0]["id"]
            assert api.wait(job_id)["state"] == "succeeded"
            assert api.output(job_id) == "hello\nworld\n"
    first.stop()

    second, url = start_dev(env, log_dir, db)
    started.append(second)
    assert _token_lines(second.output()) == (token_file, token)
    with Api(url, token=token) as api:
        assert api.http.get("/jobs").status_code == 200


def test_without_authentication_no_token_is_made(
    dev_env: dict[str, str], log_dir: Path, tmp_path: Path, started: list[Process]
) -> None:
    env = {k: v for k, v in dev_env.items() if k != "JOBRUNNER_API_TOKENS"}
    proc, url = start_dev(env, log_dir, tmp_path / "jobs.sqlite3", JOBRUNNER_AUTH="off")
    started.append(proc)
    assert "API token" not in proc.output()
    assert "Authentication is OFF" in proc.output()
    assert not (tmp_path / ".jobrunner").exists()
    with Api(url, token=None) as anonymous:
        assert anonymous.http.get("/jobs").status_code == 200


def _refusal(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [JOBRUNNER, "dev", *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("name", ["DATABASE_URL", "REDIS_URL"])
def test_a_database_or_redis_url_is_refused(
    dev_env: dict[str, str], tmp_path: Path, name: str
) -> None:
    env = dict(dev_env, **{name: "mysql+mysqldb://root@127.0.0.1/x"})
    line = _refusal(env, "--db", str(tmp_path / "jobs.sqlite3"))
    assert f"unset {name}" in line
    assert not (tmp_path / "jobs.sqlite3").exists()


def test_a_port_in_use_is_one_line(dev_env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _refusal(dev_env, "--db", str(tmp_path / "jobs.sqlite3"), "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line


def test_job_home_defaults_to_the_current_folder(
    dev_env: dict[str, str], log_dir: Path, tmp_path: Path, started: list[Process]
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    env = {k: v for k, v in dev_env.items() if k != "JOB_HOME"}
    proc, url = start_dev(env, log_dir, Path("jobs.sqlite3"), cwd=here)
    started.append(proc)
    assert (here / "jobs.sqlite3").exists()
    with Api(url) as api:
        job = api.submit(command="pwd")
        assert api.wait(job["id"])["state"] == "succeeded"
        assert api.output(job["id"]) == f"{os.path.realpath(here)}\n"
