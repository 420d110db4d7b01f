"""Helpers for tests that start real servers and workers: processes, ports, waiting."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

JOBRUNNER = str(Path(sys.executable).with_name("jobrunner"))
#: the token every test server accepts (JOBRUNNER_API_TOKENS in the tests' environment)
TEST_TOKEN = "jr_test-token-for-the-suite"
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
FINAL = {"succeeded", "failed", "cancelled"}
#: the `backend` of the `api` and `worked_api` fixtures (see tests/conftest.py): `jobrunner web`
#: and `jobrunner worker` on MariaDB and Redis, or `jobrunner dev` (SQLite, in-process broker)
BACKENDS = ["stack", "dev"]
#: run a test that takes `api` or `worked_api` against both backends
both_backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True)
T = TypeVar("T")
#: how long a test waits for something a real process does (a command starting, its group
#: dying): an upper bound on a slow machine, never a sleep; waits end as soon as it happens
PROCESS_DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll until `predicate` returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class Process:
    """A role process (`jobrunner web`, `jobrunner worker`) in its own session, logged to a file."""

    def __init__(
        self, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
    ) -> None:
        self.argv = argv
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.terminated = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        if signum == signal.SIGTERM:
            self.terminated = True

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM, once (a second one tells a Dramatiq worker process to exit at once)."""
        if not self.terminated:
            self.signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (unless `terminate` sent it), then SIGKILL to the whole group if it does not
        end in time."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group, if any
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()
        return self.proc.returncode


def stop_all(processes: Iterable[Process]) -> None:
    """Stop these processes at the same time: SIGTERM to each, then wait for each (a worker
    takes a few seconds to stop; one after another, they add up)."""
    processes = list(processes)
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.stop()


def wait_healthy(proc: Process, url: str, what: str = "the web server") -> None:
    """Wait until `url` answers GET /healthz; fail at once, with its log, if `proc` exits."""

    def healthy() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.proc.returncode}:\n{proc.output()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=20, what=what)


def start_web(env: dict[str, str], log_dir: Path, port: int | None = None) -> tuple[Process, str]:
    port = port or free_port()
    proc = Process([JOBRUNNER, "web"], dict(env, PORT=str(port)), log_dir / f"web-{port}.log")
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url)
    return proc, url


def start_dev(
    env: dict[str, str],
    log_dir: Path,
    db: Path | None,
    port: int | None = None,
    jobrunner: str = JOBRUNNER,
    cwd: Path | None = None,
    **settings: str,
) -> tuple[Process, str]:
    """`jobrunner dev` on the SQLite file `db` (None: its default): the web answers once its
    worker has started."""
    port = port or free_port()
    argv = [jobrunner, "dev", "--port", str(port)] + (["--db", str(db)] if db else [])
    log_path = log_dir / f"dev-{db.stem if db else 'default'}-{port}.log"
    proc = Process(argv, dict(env, **settings), log_path, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, what="jobrunner dev")
    return proc, url


def start_worker(
    env: dict[str, str], log_dir: Path, name: str, wait_ready: bool = True, **settings: str
) -> Process:
    proc = Process([JOBRUNNER, "worker"], dict(env, **settings), log_dir / f"worker-{name}.log")
    if wait_ready:

        def ready() -> bool:
            if proc.proc.poll() is not None:
                raise AssertionError(f"worker exited with {proc.proc.returncode}:\n{proc.output()}")
            return proc.output().count("worker process ready") >= int(
                settings.get("WORKER_PROCESSES", env.get("WORKER_PROCESSES", "1"))
            )

        wait_for(ready, timeout=20, what=f"worker {name}")
    return proc


class Api:
    """A thin client of the job API for tests."""

    def __init__(self, base_url: str, token: str | None = TEST_TOKEN) -> None:
        self.base_url = base_url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, timeout=10, headers=headers)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def submit(self, **fields: Any) -> dict[str, Any]:
        response = self.http.post("/jobs", json=fields)
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: int) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def output(self, job_id: int) -> str:
        response = self.http.get(f"/jobs/{job_id}/output")
        assert response.status_code == 200, response.text
        return response.text

    def wait(
        self, job_id: int, states: Iterable[str] = FINAL, timeout: float = 20
    ) -> dict[str, Any]:
        wanted = set(states)
        last: dict[str, Any] = {}

        def reached() -> bool:
            nonlocal last
            last = self.job(job_id)
            return last["state"] in wanted

        try:
            wait_for(reached, timeout=timeout, what=f"job {job_id} to be {sorted(wanted)}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {last}") from None
        return last


def processes_with(marker: str, under: Path | None = None) -> list[str]:
    """Command lines of live processes whose command line holds `marker` (zombies excluded);
    with `under`, only those whose working folder is in it (the commands of one test's jobs,
    whatever other test runs share the machine)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = Path(os.readlink(entry / "cwd")) if under is not None else None
        except OSError:
            continue
        if cwd is not None and under is not None and not cwd.is_relative_to(under):
            continue
        if marker in cmdline and ") Z " not in stat:
            found.append(f"{entry.name}: {cmdline}")
    return found


def age(engine: Any, column: str, seconds: float, job_id: int | None = None) -> None:
    """Move a time column of one job (or of every job) `seconds` into the past, on MariaDB or
    SQLite alike (as if that much time had gone by)."""
    import datetime as dt

    import sqlalchemy as sa

    from service.db import jobs

    with engine.begin() as conn:
        query = sa.select(jobs.c.id, jobs.c[column])
        if job_id is not None:
            query = query.where(jobs.c.id == job_id)
        for row_id, value in conn.execute(query).all():
            if value is not None:
                moved = value - dt.timedelta(seconds=seconds)
                conn.execute(jobs.update().where(jobs.c.id == row_id).values({column: moved}))
