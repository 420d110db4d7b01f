"""The naive execution baseline (shared/baselines/exec_naive), run as its README says.

A Dramatiq runner that does per job only what "a row per job and a message per job" needs
(one UPDATE+SELECT, `subprocess.run(shell=True)`, one UPDATE). `bench.execute` drains the same
number of `true` jobs through it in every repetition, beside the project: the ratio
project/naive cancels the machine's noise. Its own database, and Redis db 13 (keys deleted by
pattern when it stops; the server is shared).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from bench import procs
from bench.baseline import BASELINE_DIR
from bench.stack import BIN, Role, Stack, clear_redis, database_url, sql, wait_for

NAIVE_DIR = BASELINE_DIR / "exec_naive"
NAIVE_DB = "jobrunner_bench_naive"
NAIVE_REDIS = "redis://127.0.0.1:6379/13"
NAIVE_KEYS = "dramatiq:*"


def naive_available() -> bool:
    return (NAIVE_DIR / "tasks.py").exists() and (NAIVE_DIR / "enqueue.py").exists()


class NaiveRunner:
    """The naive runner's worker as one more role of a stack, and its enqueue-and-drain."""

    def __init__(self, stack: Stack, processes: int, threads: int) -> None:
        if not naive_available():
            raise RuntimeError(
                f"no naive runner in {NAIVE_DIR} (set BENCH_BASELINE_DIR to shared/baselines)"
            )
        self.stack = stack
        self.processes, self.threads = processes, threads
        self.role: Role | None = None
        self.env: dict[str, str] = {
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",  # its folder is shared: leave it as found
            "BASELINE_DB_URL": database_url(NAIVE_DB),
            "BASELINE_REDIS_URL": NAIVE_REDIS,
        }

    def start(self) -> Role:
        sql(f"DROP DATABASE IF EXISTS `{NAIVE_DB}`")
        sql(f"CREATE DATABASE `{NAIVE_DB}`")
        clear_redis(NAIVE_REDIS, NAIVE_KEYS)
        argv = [str(BIN / "dramatiq"), "tasks", "--processes", str(self.processes)]
        argv += ["--threads", str(self.threads)]
        role = Role("naive", argv, dict(self.env, JOB_HOME=str(NAIVE_DIR)), self._log())
        self.stack.roles.append(role)

        def ready() -> bool:
            role.check_alive()
            return role.log_text().count("Worker process is ready") >= self.processes

        wait_for(ready, 60, "the naive runner's workers")
        self.role = role
        return role

    def _log(self) -> Path:
        return self.stack.run_dir / "naive-worker.log"

    def drain(self, jobs: int, timeout: float) -> dict[str, Any]:
        """Submit `jobs` jobs `true` with its enqueue.py and wait for them; its JSON line, plus
        the CPU its worker processes used per job."""
        assert self.role is not None
        pids = self.role.python_tree()
        cpu0 = procs.cpu_seconds(pids)
        kids0 = procs.cpu_seconds(pids, children=True)
        db0 = procs.cpu_seconds(procs.pids_named("mariadbd"))
        argv = [str(BIN / "python"), str(NAIVE_DIR / "enqueue.py"), "--jobs", str(jobs)]
        argv += ["--command", "true", "--wait", str(timeout)]
        done = subprocess.run(
            argv,
            env=self.env,
            cwd=NAIVE_DIR,
            capture_output=True,
            text=True,
            timeout=timeout + 60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"naive enqueue.py failed:\n{done.stdout}{done.stderr}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        pids = self.role.python_tree()
        result["worker_cpu_ms"] = (procs.cpu_seconds(pids) - cpu0) * 1000 / jobs
        result["children_cpu_ms"] = (procs.cpu_seconds(pids, children=True) - kids0) * 1000 / jobs
        result["mariadbd_cpu_ms"] = (
            (procs.cpu_seconds(procs.pids_named("mariadbd")) - db0) * 1000 / jobs
        )
        return result

    def stop(self) -> None:
        if self.role is not None:
            self.stack.stop_role(self.role)
            self.role = None
        clear_redis(NAIVE_REDIS, NAIVE_KEYS)
        sql(f"DROP DATABASE IF EXISTS `{NAIVE_DB}`")
