"""Chaos scenarios: a private MariaDB and Redis, web and workers, and a ledger per scenario.

Each scenario drives a few hundred jobs through one fault, then draws up its ledger:
submitted, succeeded, failed (with reasons), lost (must be 0) and concurrent duplicate runs
(must be 0, from the start/tick/end stamps the job commands write). The ledgers are printed at
the end of the session and written to `chaos-ledgers.txt` in the test log folder.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from service.migrate import apply_migrations
from tests.chaos.servers import MariaDBServer, RedisServer
from tests.support import (
    AUTH,
    TEST_TOKEN,
    Process,
    processes_with,
    start_web,
    start_worker,
    stop_all,
    wait_for,
)

LEDGERS: list[str] = []

TICK_SH = """#!/bin/sh
# tick.sh N: stamps "start", then "tick" every 0.1 s N times, then "end", to $STAMPS:
# "<job id> <attempt> <pid of this run> <what> <time>"
s() { echo "$JOBRUNNER_JOB_ID $JOBRUNNER_ATTEMPT $$ $1 $(date +%s.%N)" >> "$STAMPS"; }
s start
i=0
while [ "$i" -lt "$1" ]; do sleep 0.1; s tick; i=$((i + 1)); done
s end
"""


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    server = MariaDBServer(tmp_path_factory.mktemp("mariadb"))
    server.start()
    yield server
    server.remove()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@dataclass
class Stack:
    """The web and workers of one scenario, on the private servers."""

    env: dict[str, str]
    log_dir: Path
    stamps: Path
    engine: sa.Engine
    web_url: str = ""
    web: Process | None = None
    workers: dict[str, Process] = field(default_factory=dict)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    submitted: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: one client for every submission: a client a request builds an SSL context each time
    #: (~35 ms of CPU, taken from the workers under test); no connection is kept between
    #: requests, so each meets the server as it is then, restarted or not
    _http: httpx.Client = field(
        default_factory=lambda: httpx.Client(
            headers=AUTH, timeout=15, limits=httpx.Limits(max_keepalive_connections=0)
        )
    )

    def start_web(self) -> None:
        self.web, self.web_url = start_web(self.env, self.log_dir)

    def start_worker(self, name: str, **settings: str) -> Process:
        self.workers[name] = start_worker(self.env, self.log_dir, name, **settings)
        return self.workers[name]

    def submit(self, **fields: Any) -> int | None:
        """POST one job; remember its id when the answer is 201, count every status."""
        try:
            response = self._http.post(f"{self.web_url}/jobs", json=fields)
        except httpx.HTTPError:
            with self._lock:
                self.statuses[0] += 1
            return None
        with self._lock:
            self.statuses[response.status_code] += 1
            if response.status_code == 201:
                self.submitted.append(response.json()["id"])
                return response.json()["id"]
        assert response.status_code == 503, response.text  # the only refusal a fault may cause
        assert "unavailable" in response.json()["error"]
        return None

    def submit_many(
        self, count: int, rate: float, fields: Callable[[int], dict[str, Any]]
    ) -> threading.Thread:
        """Submit `count` jobs (job i has `fields(i)`) at about `rate` per second, from a
        background thread."""

        def run() -> None:
            start = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                for i in range(count):
                    pause = start + i / rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    pool.submit(self.submit, **fields(i))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    @property
    def home(self) -> Path:
        """JOB_HOME of this scenario: where its commands run."""
        return Path(self.env["JOB_HOME"])

    def commands(self, marker: str = "tick.sh") -> list[str]:
        """This scenario's job commands still alive (not another test run's)."""
        return processes_with(marker, under=self.home)

    def rows(self) -> list[sa.Row[Any]]:
        with self.engine.begin() as conn:
            return conn.execute(
                sa.text("SELECT id, state, attempts, last_error, finished_at FROM jobs ORDER BY id")
            ).all()

    def wait_all_final(self, timeout: float) -> None:
        def done() -> bool:
            try:
                rows = self.rows()
            except sa.exc.OperationalError:
                return False
            final = {r.id for r in rows if r.state in ("succeeded", "failed", "cancelled")}
            return set(self.submitted) <= final

        try:
            wait_for(done, timeout=timeout, interval=0.5, what="every job to be final")
        except AssertionError:
            pass  # the ledger counts what is not final as lost

    def stop(self) -> None:
        stop_all([*self.workers.values(), *([self.web] if self.web is not None else [])])
        self._http.close()
        self.engine.dispose()


@pytest.fixture
def stack(
    mariadb: MariaDBServer, redis_server: RedisServer, tmp_path: Path, log_dir: Path
) -> Iterator[Stack]:
    name = f"chaos_{uuid.uuid4().hex[:8]}"
    database_url = f"{mariadb.url}/{name}"
    apply_migrations(database_url)
    home = tmp_path / "job_home"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "tick.sh").write_text(TICK_SH)
    (home / "bin" / "tick.sh").chmod(0o755)
    stamps = tmp_path / "stamps"
    stamps.write_text("")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "JOBRUNNER_REDIS_NAMESPACE": "chaos",
        "JOB_HOME": str(home),
        "WORKER_PROCESSES": "1",
        "WORKER_THREADS": "4",
        "JOBRUNNER_HEARTBEAT_INTERVAL": "0.3",
        "JOBRUNNER_LEASE_TIMEOUT": "3",
        "JOBRUNNER_SWEEP_INTERVAL": "0.2",
        "JOBRUNNER_KILL_GRACE": "1",
        "JOBRUNNER_RETRY_BACKOFF": "0.2",
        "JOBRUNNER_SHUTDOWN_GRACE": "1",
        "JOBRUNNER_STARTUP_TIMEOUT": "30",
        "JOBRUNNER_PASS_ENV": "STAMPS",
        "STAMPS": str(stamps),
        "JOBRUNNER_API_TOKENS": TEST_TOKEN,
    }
    scenario_logs = log_dir / name
    scenario_logs.mkdir()
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    stack = Stack(env=env, log_dir=scenario_logs, stamps=stamps, engine=engine)
    yield stack
    stack.stop()


def stamps_of(stamps: Path, what: str) -> dict[int, float]:
    """Per job, the time of its last `what` stamp (start, tick or end)."""
    found: dict[int, float] = {}
    for line in stamps.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[3] == what:
            found[int(parts[0])] = max(found.get(int(parts[0]), 0.0), float(parts[4]))
    return found


def runs_by_job(stamps: Path) -> dict[int, list[tuple[float, float]]]:
    """Per job, the [first stamp, last stamp] interval of each run (one run = one shell pid)."""
    spans: dict[tuple[int, str], list[float]] = {}
    for line in stamps.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue
        job_id, _attempt, pid, _what, when = parts
        span = spans.setdefault((int(job_id), pid), [float(when), float(when)])
        span[0], span[1] = min(span[0], float(when)), max(span[1], float(when))
    runs: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
    for (job_id, _pid), (first, last) in spans.items():
        runs[job_id].append((first, last))
    return runs


def concurrent_duplicates(runs: dict[int, list[tuple[float, float]]]) -> int:
    """How many pairs of runs of one job overlapped in time."""
    overlaps = 0
    for spans in runs.values():
        for (_, earlier_end), (later_start, _) in itertools.combinations(sorted(spans), 2):
            if later_start < earlier_end:
                overlaps += 1
    return overlaps


@dataclass
class Ledger:
    scenario: str
    submitted: int
    succeeded: int
    failed: dict[str, int]
    cancelled: int
    lost: int
    duplicate_runs: int
    runs: int
    retried: int
    refused: dict[int, int]

    def line(self) -> str:
        return (
            f"{self.scenario}: submitted={self.submitted} succeeded={self.succeeded} "
            f"failed={sum(self.failed.values())} {dict(self.failed) or ''} "
            f"cancelled={self.cancelled} lost={self.lost} "
            f"concurrent_duplicate_runs={self.duplicate_runs} | runs={self.runs} "
            f"jobs_with_more_than_one_attempt={self.retried} refused_posts={self.refused}"
        )


def draw_ledger(scenario: str, stack: Stack) -> Ledger:
    rows = {row.id: row for row in stack.rows()}
    submitted = [rows[i] for i in stack.submitted if i in rows]
    runs = runs_by_job(stack.stamps)
    ledger = Ledger(
        scenario=scenario,
        submitted=len(stack.submitted),
        succeeded=sum(1 for r in submitted if r.state == "succeeded"),
        failed=dict(collections.Counter(r.last_error for r in submitted if r.state == "failed")),
        cancelled=sum(1 for r in submitted if r.state == "cancelled"),
        lost=len(stack.submitted)
        - sum(1 for r in submitted if r.state in ("succeeded", "failed", "cancelled")),
        duplicate_runs=concurrent_duplicates(runs),
        runs=sum(len(spans) for spans in runs.values()),
        retried=sum(1 for r in submitted if r.attempts > 1),
        refused={code: n for code, n in stack.statuses.items() if code != 201},
    )
    LEDGERS.append(ledger.line())
    with (stack.log_dir.parent / "chaos-ledgers.txt").open("a") as ledgers:
        ledgers.write(ledger.line() + "\n")
    return ledger


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if LEDGERS:
        terminalreporter.section("chaos ledgers")
        for line in LEDGERS:
            terminalreporter.write_line(line)
