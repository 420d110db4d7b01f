"""Start and stop the real stack on loopback: `jobrunner web`, `jobrunner worker`, the baseline.

A `Stack` owns a bench database (dropped and migrated afresh with `jobrunner migrate`), a Redis
namespace of its own, a run folder (logs, JOB_HOME) and every process it starts; `close()` (or
leaving the `with` block, or SIGTERM/SIGINT) stops them all and removes what it created.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import MySQLdb
import redis

from bench import procs
from service.config import Settings

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
JOBRUNNER = str(BIN / "jobrunner")
DEFAULTS = Settings()
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "passwd": ""}
FINAL_STATES = ("succeeded", "failed", "cancelled")


def install_signal_handlers() -> None:
    """Turn SIGTERM into SystemExit, so that `finally` blocks stop what was started."""

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def free_port() -> int:
    """A free loopback port outside the ephemeral range, where test suites that run beside
    the benchmark pick theirs (a port they took over could answer our health checks)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 30000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1/0.0.0.0:`port` (from /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            inodes.add(inode)
    return inodes


def listens(pid: int, port: int) -> bool:
    """True once a process of `pid`'s tree holds the socket listening on `port`."""
    inodes = listening_inodes(port)
    if not inodes:
        return False
    for member in procs.tree(pid):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{member}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{member}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        return True
    return False


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll until `predicate` is truthy; RuntimeError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --- MariaDB ------------------------------------------------------------------------------


def mysql(database: str | None = None) -> MySQLdb.Connection:
    """A plain autocommit connection as root on the local MariaDB."""
    conn = MySQLdb.connect(**MYSQL, database=database or "", charset="utf8mb4", autocommit=True)
    conn.cursor().execute("SET time_zone = '+00:00'")
    return conn


def sql(query: str, args: Any = None, database: str | None = None) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection; return its rows."""
    conn = mysql(database)
    try:
        cursor = conn.cursor()
        cursor.execute(query, args)
        return list(cursor.fetchall())
    finally:
        conn.close()


def database_url(database: str) -> str:
    return f"mysql+mysqldb://{MYSQL['user']}@{MYSQL['host']}:{MYSQL['port']}/{database}"


def drop_database(database: str) -> None:
    sql(f"DROP DATABASE IF EXISTS `{database}`")


# --- Redis --------------------------------------------------------------------------------


def clear_redis(url: str, pattern: str) -> int:
    """Delete the keys matching `pattern` (SCAN, never FLUSHDB: the server is shared)."""
    client = redis.Redis.from_url(url)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch.clear()
        if batch:
            deleted += client.delete(*batch)
        return deleted
    finally:
        client.close()


# --- processes ----------------------------------------------------------------------------


class Role:
    """A process in its own session (so its whole tree can be stopped), logged to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=env.get("JOB_HOME", str(REPO)),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started = time.time()
        self.url = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if not self.alive():
            tail = "\n".join(self.log_text().splitlines()[-20:])
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def python_tree(self) -> list[int]:
        """The role's own Python processes (the commands of running jobs left out)."""
        return [pid for pid in procs.tree(self.pid) if procs.is_python(pid)]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL to the whole session's group if it does not end in time."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log.close()


def http_ok(url: str, path: str = "/healthz") -> bool:
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


# --- configuration ------------------------------------------------------------------------


@dataclass
class BenchConfig:
    """What every benchmark shares: where the stack lives and how its roles are set up."""

    database: str = "jobrunner_bench"
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = "jobrunner_bench"
    token: str = "bench-token-0123456789abcdef"
    web_concurrency: int | None = None
    worker_processes: int | None = None
    worker_threads: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    keep_logs: bool = False
    smoke: bool = False
    reps: int = 3

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchConfig:
        extra = {}
        for item in args.env or []:
            name, _, value = item.partition("=")
            extra[name] = value
        return cls(
            database=args.database,
            namespace=args.namespace,
            redis_url=args.redis_url,
            web_concurrency=args.web_concurrency,
            worker_processes=args.worker_processes,
            worker_threads=args.worker_threads,
            extra_env=extra,
            keep_logs=args.keep_logs,
            smoke=args.smoke,
            reps=1 if args.smoke and args.reps is None else (args.reps or 3),
        )


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every benchmark script takes."""
    group = parser.add_argument_group("common")
    group.add_argument("--reps", type=int, default=None, help="repetitions (default 3; smoke 1)")
    group.add_argument(
        "--smoke", action="store_true", help="tiny sizes, a few seconds; prints, claims nothing"
    )
    group.add_argument(
        "--web-concurrency",
        type=int,
        default=None,
        help=f"WEB_CONCURRENCY (default: unset, the project's {DEFAULTS.web_concurrency})",
    )
    group.add_argument(
        "--worker-processes", type=int, default=None, help="WORKER_PROCESSES (default: unset)"
    )
    group.add_argument(
        "--worker-threads", type=int, default=None, help="WORKER_THREADS (default: unset)"
    )
    group.add_argument(
        "--env",
        action="append",
        metavar="NAME=VALUE",
        help="extra environment for the web and worker roles (repeatable)",
    )
    group.add_argument("--database", default="jobrunner_bench", help="bench database (dropped)")
    group.add_argument("--namespace", default="jobrunner_bench", help="Redis key namespace")
    group.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    group.add_argument("--keep-logs", action="store_true", help="keep the run folder and logs")
    group.add_argument("--json", metavar="FILE", help="also write tables and raw values as JSON")


# --- the stack ----------------------------------------------------------------------------


class Stack:
    """A bench database, a Redis namespace, a run folder, and the role processes."""

    def __init__(
        self, config: BenchConfig, *, fresh: bool = True, keep_database: bool = False
    ) -> None:
        self.config = config
        self.run_dir = Path(tempfile.mkdtemp(prefix="jobrunner-bench-"))
        self.job_home = self.run_dir / "home"
        (self.job_home / "bin").mkdir(parents=True)
        self.roles: list[Role] = []
        self.web: Role | None = None
        self.worker: Role | None = None
        self._closed = False
        self._started = 0
        #: set when something went wrong: the run folder (logs) is then kept
        self.failed = False
        self._fresh = fresh
        self.keep_database = keep_database

    # --- setup and teardown -----------------------------------------------------------

    def __enter__(self) -> Stack:
        self.open()
        return self

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        if exc_type is not None:
            self.failed = True
        self.close()

    def open(self) -> None:
        """Drop and re-create the bench database with `jobrunner migrate` (or only migrate it,
        when not `fresh`); clear the namespace's Redis keys."""
        if self._fresh:
            drop_database(self.config.database)
        clear_redis(self.config.redis_url, f"{self.config.namespace}:*")
        result = subprocess.run(
            [JOBRUNNER, "migrate"],
            env=self.env(),
            cwd=self.job_home,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"jobrunner migrate failed:\n{result.stdout}{result.stderr}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for role in reversed(self.roles):
            role.stop()
        clear_redis(self.config.redis_url, f"{self.config.namespace}:*")
        if not self.keep_database:
            drop_database(self.config.database)
        if self.config.keep_logs or self.failed:
            print(f"(logs kept in {self.run_dir})", file=sys.stderr)
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    @property
    def database_url(self) -> str:
        return database_url(self.config.database)

    def env(self, **overrides: str) -> dict[str, str]:
        """The roles' whole environment: built from nothing, so no caller setting leaks in."""
        cfg = self.config
        env = {
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": cfg.redis_url,
            "JOBRUNNER_REDIS_NAMESPACE": cfg.namespace,
            "JOB_HOME": str(self.job_home),
            # authentication is being added: the web will require this token, and the bench
            # clients send it in every request (ignored by a server without authentication)
            "JOBRUNNER_API_TOKENS": cfg.token,
        }
        if cfg.web_concurrency is not None:
            env["WEB_CONCURRENCY"] = str(cfg.web_concurrency)
        if cfg.worker_processes is not None:
            env["WORKER_PROCESSES"] = str(cfg.worker_processes)
        if cfg.worker_threads is not None:
            env["WORKER_THREADS"] = str(cfg.worker_threads)
        env.update(cfg.extra_env)
        env.update(overrides)
        return env

    # --- roles ------------------------------------------------------------------------

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> Role:
        self._started += 1  # a log file per process started, never reused
        role = Role(name, argv, env, self.run_dir / f"{name}-{self._started}.log")
        self.roles.append(role)
        return role

    def start_web(self, port: int | None = None, **env: str) -> Role:
        """`jobrunner web` on a free loopback port; returns once /healthz answers."""
        port = port or free_port()
        role = self._start("web", [JOBRUNNER, "web"], self.env(PORT=str(port), **env))
        role.url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            role.check_alive()
            return listens(role.pid, port) and http_ok(role.url)

        wait_for(healthy, 30, "the web role")
        if self.web is None:
            self.web = role
        return role

    @property
    def worker_processes(self) -> int:
        return self.config.worker_processes or DEFAULTS.worker_processes

    def start_worker(self, wait: bool = True, **env: str) -> Role:
        """`jobrunner worker`; returns once every worker process says it is ready."""
        role = self._start("worker", [JOBRUNNER, "worker"], self.env(**env))
        self.worker = role
        if wait:
            self.wait_worker_ready(role)
        return role

    def wait_worker_ready(self, role: Role, timeout: float = 30) -> None:
        expected = self.worker_processes

        def ready() -> bool:
            role.check_alive()
            return role.log_text().count("worker process ready") >= expected

        wait_for(ready, timeout, "the worker role", interval=0.02)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.roles.remove(self.worker)
            self.worker = None

    def stop_role(self, role: Role) -> None:
        role.stop()
        if role in self.roles:
            self.roles.remove(role)
        if role is self.web:
            self.web = None
        if role is self.worker:
            self.worker = None

    # --- data -------------------------------------------------------------------------

    def query(self, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
        return sql(statement, args, self.config.database)

    def reset(self) -> None:
        """Empty the jobs table and the namespace's Redis keys (stop the worker first)."""
        if self.worker is not None:
            raise RuntimeError("stop the worker before a reset")
        self.query("TRUNCATE TABLE jobs")
        clear_redis(self.config.redis_url, f"{self.config.namespace}:*")

    def max_job_id(self) -> int:
        return int(self.query("SELECT COALESCE(MAX(id), 0) FROM jobs")[0][0])


@contextlib.contextmanager
def maybe_stack(config: BenchConfig, stack: Stack | None) -> Iterator[Stack]:
    """The caller's stack (run_all shares one), or a fresh one closed afterwards."""
    if stack is not None:
        yield stack
        return
    with Stack(config) as own:
        yield own
