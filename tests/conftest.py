"""Fixtures: a test database on the real MariaDB, a Redis namespace, real servers and workers.

Unit tests use none of these. Integration tests get a freshly emptied `jobs` table, a web
server (uvicorn, `jobrunner web`) and a shared worker (`jobrunner worker`) serving the queues
in SHARED_QUEUES; tests that need their own worker start one on a queue of their own.

The `api` and `worked_api` fixtures serve a backend: `stack` (the above, MariaDB and Redis) by
default; tests marked `@both_backends` run once more against `dev`: `jobrunner dev` processes
(web and worker in one, SQLite, in-process broker), one whose worker serves no queue of the
tests (for `api`: jobs stay waiting) and one whose worker serves every queue (`worked_api`).
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from service.db import create_engine
from service.migrate import apply_migrations
from tests.support import TEST_TOKEN, Api, Process, start_dev, start_web, start_worker

MYSQL_SERVER = os.environ.get("TEST_MYSQL_URL", "mysql+mysqldb://root@127.0.0.1:3306")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SHARED_QUEUES = "default,alpha,beta"

# the tests' environment must not leak into the processes they start, nor the reverse
for _name in list(os.environ):
    if _name.startswith(("JOBRUNNER_", "WORKER_", "dramatiq_")) or _name in (
        "DATABASE_URL",
        "REDIS_URL",
        "JOB_HOME",
        "RUN_MODE",
        "PORT",
    ):
        del os.environ[_name]

SCRIPTS = {
    # says "Hello," and "world!", as the original example did
    "hello_world.sh": '#!/bin/sh\necho "Hello,"\nsleep 0.1\necho "world!"\n',
    # appends "<job id> <attempt> start|end <time>" to $STAMPS around a sleep of $1 seconds
    "stamp.sh": (
        '#!/bin/sh\nstamp() { echo "$JOBRUNNER_JOB_ID $JOBRUNNER_ATTEMPT $1 $(date +%s.%N)"; }\n'
        'stamp start >> "$STAMPS"; sleep "${1:-0}"; stamp end >> "$STAMPS"\n'
    ),
    # fails until it has been run $1 times (counted in a file per job)
    "flaky.sh": (
        '#!/bin/sh\nf="$COUNTS/$JOBRUNNER_JOB_ID"; n=$(( $(cat "$f" 2>/dev/null || echo 0) + 1 ))\n'
        'echo $n > "$f"; echo "run $n"; [ "$n" -ge "$1" ]\n'
    ),
}


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"jobrunner_test_{os.getpid()}"
    url = f"{MYSQL_SERVER}/{name}"
    apply_migrations(url)
    yield url
    server = sa.create_engine(MYSQL_SERVER, poolclass=sa.pool.NullPool)
    with server.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    server.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_namespace() -> Iterator[str]:
    namespace = f"jrtest-{uuid.uuid4().hex[:8]}"
    yield namespace
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{namespace}*"))  # sub-namespaces of tests' own databases
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def job_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("job_home")
    (home / "bin").mkdir()
    for name, text in SCRIPTS.items():
        path = home / "bin" / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return home


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def base_env(
    database_url: str,
    redis_namespace: str,
    job_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """The environment of every web and worker process the tests start: fast timings."""
    scratch = tmp_path_factory.mktemp("scratch")
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "JOBRUNNER_REDIS_NAMESPACE": redis_namespace,
        "JOB_HOME": str(job_home),
        "WORKER_PROCESSES": "1",
        "WORKER_THREADS": "4",
        "JOBRUNNER_HEARTBEAT_INTERVAL": "0.2",
        "JOBRUNNER_LEASE_TIMEOUT": "5",
        "JOBRUNNER_SWEEP_INTERVAL": "0.2",
        "JOBRUNNER_KILL_GRACE": "1",
        "JOBRUNNER_RETRY_BACKOFF": "0.2",
        "JOBRUNNER_SHUTDOWN_GRACE": "2",
        "JOBRUNNER_PASS_ENV": "STAMPS,COUNTS",
        "JOBRUNNER_LOG_LEVEL": "info",
        "STAMPS": str(scratch / "stamps"),
        "COUNTS": str(scratch / "counts"),
        "SECRET_OF_THE_WORKER": "must-not-leak",
        "JOBRUNNER_API_TOKENS": f"jr_another-token,{TEST_TOKEN}",
    }


@pytest.fixture(scope="session")
def scratch(base_env: dict[str, str]) -> Path:
    Path(base_env["COUNTS"]).mkdir(exist_ok=True)
    return Path(base_env["STAMPS"]).parent


@pytest.fixture(scope="session")
def web(base_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    proc, url = start_web(base_env, log_dir)
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def shared_worker(base_env: dict[str, str], log_dir: Path) -> Iterator[Process]:
    proc = start_worker(base_env, log_dir, "shared", WORKER_QUEUES=SHARED_QUEUES)
    yield proc
    proc.stop()


def empty_jobs(engine: sa.Engine, scratch: Path) -> None:
    """An empty jobs table, no schedule (a schedule an earlier test left, the fuzzer's
    included, would go on making jobs in every later test), and empty stamp and count files."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM schedules")  # first: no tick lands after the jobs go
        conn.exec_driver_sql("DELETE FROM jobs")
    stamps = scratch / "stamps"
    stamps.write_text("")
    for count in (scratch / "counts").iterdir():
        count.unlink()


@pytest.fixture
def clean_db(engine: sa.Engine, scratch: Path) -> None:
    """An empty jobs table (MariaDB), and empty stamp and count files."""
    empty_jobs(engine, scratch)


@pytest.fixture(scope="session")
def dev_env(base_env: dict[str, str]) -> dict[str, str]:
    """The environment of the `jobrunner dev` processes: no DATABASE_URL, no REDIS_URL."""
    return {k: v for k, v in base_env.items() if k not in ("DATABASE_URL", "REDIS_URL")}


class DevServer:
    """A `jobrunner dev` process, its URL, and an engine on its SQLite file."""

    def __init__(self, env: dict[str, str], log_dir: Path, db: Path, **settings: str) -> None:
        self.proc, self.url = start_dev(env, log_dir, db, **settings)
        self.engine = create_engine(f"sqlite:///{db}")

    def stop(self) -> None:
        self.proc.stop()
        self.engine.dispose()


@pytest.fixture(scope="session")
def dev_idle(
    dev_env: dict[str, str], log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevServer]:
    """`jobrunner dev` whose worker serves only a queue no test uses: jobs stay waiting."""
    server = DevServer(
        dev_env, log_dir, tmp_path_factory.mktemp("dev") / "idle.sqlite3", WORKER_QUEUES="idle"
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dev_worked(
    dev_env: dict[str, str], log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevServer]:
    """`jobrunner dev` whose worker serves every queue."""
    server = DevServer(dev_env, log_dir, tmp_path_factory.mktemp("dev") / "worked.sqlite3")
    yield server
    server.stop()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """`stack` (jobrunner web and worker, MariaDB, Redis) unless parametrized (both_backends)."""
    return getattr(request, "param", "stack")


def _client(url: str, engine: sa.Engine, scratch: Path) -> Iterator[Api]:
    empty_jobs(engine, scratch)
    client = Api(url)
    yield client
    client.http.close()


@pytest.fixture
def api(backend: str, request: pytest.FixtureRequest, scratch: Path) -> Iterator[Api]:
    """The API of the backend, on an empty database, with no worker serving the tests' queues
    (unless `worked_api` started the shared one)."""
    if backend == "dev":
        server: DevServer = request.getfixturevalue("dev_idle")
        yield from _client(server.url, server.engine, scratch)
    else:
        yield from _client(
            request.getfixturevalue("web"), request.getfixturevalue("engine"), scratch
        )


@pytest.fixture
def worked_api(backend: str, request: pytest.FixtureRequest, scratch: Path) -> Iterator[Api]:
    """The API of the backend, on an empty database, with a worker serving the tests' queues."""
    if backend == "dev":
        server: DevServer = request.getfixturevalue("dev_worked")
        yield from _client(server.url, server.engine, scratch)
    else:
        engine = request.getfixturevalue("engine")
        empty_jobs(engine, scratch)  # before the shared worker starts: nothing left to run
        request.getfixturevalue("shared_worker")
        yield from _client(request.getfixturevalue("web"), engine, scratch)
