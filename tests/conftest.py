"""Fixtures: a test database on the real MariaDB, a Redis namespace, real servers and workers.

Unit tests use none of these. Integration tests get a freshly emptied `jobs` table, a web
server (uvicorn, `jobrunner web`) and a shared worker (`jobrunner worker`) serving the queues
in SHARED_QUEUES; tests that need their own worker start one on a queue of their own.
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
from tests.support import TEST_TOKEN, Api, Process, start_web, start_worker

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
    keys = list(client.scan_iter(f"{namespace}:*"))
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


@pytest.fixture
def clean_db(engine: sa.Engine, scratch: Path) -> None:
    """An empty jobs table, and empty stamp and count files."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM jobs")
    stamps = scratch / "stamps"
    stamps.write_text("")
    for count in (scratch / "counts").iterdir():
        count.unlink()


@pytest.fixture
def api(web: str, clean_db: None) -> Iterator[Api]:
    client = Api(web)
    yield client
    client.http.close()


@pytest.fixture
def worked_api(api: Api, shared_worker: Process) -> Api:
    """The API with the shared worker running."""
    return api
