"""The baseline submission app (shared/baselines/jobs_app.py), run as its README says.

One uvicorn worker, its own database and table (`jobrunner_bench_baseline.jobs`), Dramatiq
messages to Redis db 4 (queue `http_bench`, which nothing consumes): the keys are deleted when
it stops, as the README asks (by pattern, not FLUSHDB, since the Redis server is shared).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.stack import (
    BIN,
    REPO,
    Role,
    Stack,
    clear_redis,
    database_url,
    free_port,
    http_ok,
    listens,
    sql,
    wait_for,
)

BASELINE_DIR = Path(os.environ.get("BENCH_BASELINE_DIR", REPO.parent / "shared" / "baselines"))
BASELINE_DB = "jobrunner_bench_baseline"
BASELINE_REDIS = "redis://127.0.0.1:6379/4"
BASELINE_KEYS = "dramatiq:http_bench*"

TABLE = """CREATE TABLE IF NOT EXISTS `{db}`.jobs (id BIGINT AUTO_INCREMENT PRIMARY KEY,
  command TEXT NOT NULL, state VARCHAR(16) NOT NULL, created_at DATETIME(6) NOT NULL)"""


def baseline_available() -> bool:
    """Whether the baseline app is where BASELINE_DIR says (figure 1 needs it)."""
    return (BASELINE_DIR / "jobs_app.py").exists()


class Baseline:
    """The baseline app as one more role of a stack (so that the stack stops it too)."""

    def __init__(self, stack: Stack, database: str = BASELINE_DB) -> None:
        if not baseline_available():
            raise RuntimeError(
                f"no baseline app in {BASELINE_DIR} (set BENCH_BASELINE_DIR to shared/baselines)"
            )
        self.stack = stack
        self.database = database
        self.role: Role | None = None

    def start(self) -> Role:
        sql(f"DROP DATABASE IF EXISTS `{self.database}`")
        sql(f"CREATE DATABASE `{self.database}`")
        sql(TABLE.format(db=self.database))
        clear_redis(BASELINE_REDIS, BASELINE_KEYS)
        port = free_port()
        env = {
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",  # the baseline's folder is shared: leave it as found
            "BENCH_DB_URL": database_url(self.database),
        }
        argv = [str(BIN / "uvicorn"), "--app-dir", str(BASELINE_DIR), "jobs_app:app"]
        # as the README runs it: default loop (uvloop, installed with the project), access log on
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        role = Role("baseline", argv, env, self.stack.run_dir / "baseline.log")
        self.stack.roles.append(role)
        role.url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            role.check_alive()
            return listens(role.pid, port) and http_ok(role.url, "/")

        wait_for(up, 30, "the baseline app")
        self.role = role
        return role

    def reset(self) -> None:
        """Empty its table and its Redis queue between repetitions."""
        sql(f"TRUNCATE TABLE `{self.database}`.jobs")
        clear_redis(BASELINE_REDIS, BASELINE_KEYS)

    def stop(self) -> None:
        if self.role is not None:
            self.stack.stop_role(self.role)
            self.role = None
        clear_redis(BASELINE_REDIS, BASELINE_KEYS)
        sql(f"DROP DATABASE IF EXISTS `{self.database}`")
