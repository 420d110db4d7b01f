"""Process roles: clear one-line errors at start, RUN_MODE, and a release safe to run twice."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from service.migrate import MIGRATIONS_DIR
from tests.conftest import MYSQL_SERVER
from tests.support import AUTH, JOBRUNNER, Process, free_port, wait_for


def run_role(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [JOBRUNNER, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("role", ["web", "worker"])
@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("DATABASE_URL", "mysql+mysqldb://root@127.0.0.1:1/jobrunner", "cannot reach the database"),
        ("DATABASE_URL", "postgresql://127.0.0.1/x", "DATABASE_URL is not usable"),
        ("REDIS_URL", "redis://127.0.0.1:1/0", "cannot reach Redis"),
        ("PORT", "eighty", "PORT must be an integer"),
    ],
)
def test_a_role_that_cannot_start_says_why_in_one_line(
    base_env: dict[str, str], role: str, setting: str, value: str, message: str
) -> None:
    env = dict(base_env, JOBRUNNER_STARTUP_TIMEOUT="0", **{setting: value})
    result = run_role(env, role)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_an_unmigrated_database_is_reported(base_env: dict[str, str]) -> None:
    name = f"jobrunner_empty_{uuid.uuid4().hex[:8]}"
    server = sa.create_engine(MYSQL_SERVER, poolclass=sa.pool.NullPool)
    with server.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    try:
        env = dict(base_env, DATABASE_URL=f"{MYSQL_SERVER}/{name}", JOBRUNNER_STARTUP_TIMEOUT="0")
        result = run_role(env, "web")
        assert result.returncode == 1
        assert "not up to date" in result.stderr and "jobrunner migrate" in result.stderr
    finally:
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE `{name}`")
        server.dispose()


def test_release_creates_the_database_and_is_safe_twice_and_concurrently(
    base_env: dict[str, str],
) -> None:
    name = f"jobrunner_release_{uuid.uuid4().hex[:8]}"
    env = dict(base_env, DATABASE_URL=f"{MYSQL_SERVER}/{name}")
    try:
        both = [
            subprocess.Popen([JOBRUNNER, "release"], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = [proc.communicate(timeout=60)[0] for proc in both]
        assert [proc.returncode for proc in both] == [0, 0]
        every = ", ".join(sorted(path.stem for path in MIGRATIONS_DIR.glob("*.py")))
        assert sorted(outputs) == [
            "applied 0 migration(s)\n",
            f"applied {len(every.split(', '))} migration(s): {every}\n",
        ]
        again = run_role(env, "migrate")
        assert (again.returncode, again.stdout) == (0, "applied 0 migration(s)\n")
    finally:
        server = sa.create_engine(MYSQL_SERVER, poolclass=sa.pool.NullPool)
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        server.dispose()


def test_run_mode_picks_the_role(base_env: dict[str, str], log_dir: Path, clean_db: None) -> None:
    port = free_port()
    web = Process(
        [JOBRUNNER],
        dict(base_env, RUN_MODE="http_server", PORT=str(port)),
        log_dir / "run-mode-web.log",
    )
    worker = Process(
        [JOBRUNNER],
        dict(base_env, RUN_MODE="delayed_job", WORKER_QUEUES="runmode"),
        log_dir / "run-mode-worker.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=20, what="RUN_MODE=http_server to serve")
        job = httpx.post(
            f"{url}/jobs", json={"command": "true", "queue": "runmode"}, headers=AUTH
        ).json()
        wait_for(
            lambda: (
                httpx.get(f"{url}/jobs/{job['id']}", headers=AUTH).json()["state"] == "succeeded"
            ),
            timeout=20,
            what="RUN_MODE=delayed_job to run the job",
        )
    finally:
        web.stop()
        worker.stop()
    bogus = run_role(dict(base_env, RUN_MODE="bogus"))
    assert bogus.returncode == 1 and "RUN_MODE" in bogus.stderr


def test_the_originals_docker_link_variables_name_the_database(
    base_env: dict[str, str], log_dir: Path
) -> None:
    """As the original read them: no DATABASE_URL, the database from `--link` variables."""
    name = f"jobrunner_link_{uuid.uuid4().hex[:8]}"
    server = sa.make_url(MYSQL_SERVER)
    env = {k: v for k, v in base_env.items() if k != "DATABASE_URL"}
    env.update(
        # another database is another deployment: it may not share the suite's namespace
        JOBRUNNER_REDIS_NAMESPACE=f"{base_env['JOBRUNNER_REDIS_NAMESPACE']}-{name}",
        MYSQL_PORT_3306_TCP_ADDR=server.host or "127.0.0.1",
        MYSQL_PORT_3306_TCP_PORT=str(server.port or 3306),
        MYSQL_DATABASE_NAME=name,
        MYSQL_ENV_MYSQL_USER=server.username or "root",
        MYSQL_ENV_MYSQL_PASSWORD=server.password or "",
    )
    try:
        migrated = run_role(env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        assert "docker-link variables" in migrated.stderr
        assert f"/{name}" in migrated.stderr  # which database, its password hidden
        port = free_port()
        web = Process([JOBRUNNER, "web"], dict(env, PORT=str(port)), log_dir / "web-link.log")
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: _ready(url), timeout=20, what="the web on the linked database")
            assert "docker-link variables" in web.output()
        finally:
            web.stop()
    finally:
        engine = sa.create_engine(MYSQL_SERVER, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        engine.dispose()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
