"""Several scheduler processes tick the same schedules at once (API.md section 7): each tick
makes at most one job, by a ledger of every tick each process took."""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from service import db, schedules
from service.db import create_engine
from service.migrate import apply_migrations
from service.schedules import NewSchedule, Timing
from tests.conftest import MYSQL_SERVER
from tests.races import ticker

TEMPLATE = {
    "command": "true",
    "argv": None,
    "queue": "tick-race",
    "priority": 0,
    "timeout": 60,
    "max_retries": 0,
    "env": None,
    "concurrency_key": None,
    "concurrency_limit": None,
}
PROCESSES = 5
RUN_S = 4.0


@pytest.fixture
def private_database() -> Iterator[str]:
    """A database of this test's own: no other scheduler (the shared worker's) ticks there."""
    name = f"jobrunner_tick_race_{uuid.uuid4().hex[:8]}"
    url = f"{MYSQL_SERVER}/{name}"
    apply_migrations(url)
    yield url
    server = sa.create_engine(MYSQL_SERVER, poolclass=sa.pool.NullPool)
    with server.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    server.dispose()


def test_racing_schedulers_take_each_tick_once(private_database: str, tmp_path: Path) -> None:
    database_url = private_database
    engine = create_engine(database_url, pool_size=2)
    ids = [
        schedules.create(
            engine, NewSchedule(f"race-{n}", Timing(None, 1, "UTC"), TEMPLATE, overlap="allow")
        ).id
        for n in range(3)
    ]
    ledger_path = tmp_path / "ticks.jsonl"
    until = time.monotonic() + RUN_S
    context = multiprocessing.get_context("spawn")
    tickers = [
        context.Process(target=ticker, args=(database_url, f"t{n}", str(ledger_path), until))
        for n in range(PROCESSES)
    ]
    for process in tickers:
        process.start()
    for process in tickers:
        process.join(RUN_S + 30)
        assert process.exitcode == 0
    ledger = [json.loads(line) for line in ledger_path.read_text().splitlines()]
    ticks = Counter((entry[1], entry[2]) for entry in ledger)
    assert ticks and max(ticks.values()) == 1  # no tick taken twice
    with engine.begin() as conn:
        made = conn.execute(
            sa.select(db.jobs.c.schedule_id, sa.func.count()).group_by(db.jobs.c.schedule_id)
        ).all()
    assert dict(made) == Counter(entry[1] for entry in ledger)  # one job per tick, no more
    for schedule_id in ids:  # about one a second each (the first after 1 s)
        assert RUN_S - 2 <= dict(made)[schedule_id] <= RUN_S + 1
    takers = {entry[0] for entry in ledger}
    print(f"{len(ledger)} ticks by {sorted(takers)}: {dict(made)} jobs per schedule")
    engine.dispose()
