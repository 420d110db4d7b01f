"""Jobs put straight into the bench database, and their wake-up messages, for fast enqueueing.

The rows carry the same values `service.jobs.create` writes for a new queued job, and the
wake-up is the one the web sends after committing a batch (`service.dispatch.Dispatcher.wake`,
once per queue): to a worker they are indistinguishable from jobs submitted through the API,
but 2,000 of them take ~0.1 s to insert instead of seconds of HTTP requests competing with the
workers for the two cores.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import sqlalchemy as sa

from bench.stack import FINAL_STATES, Stack
from service.broker import make_broker
from service.config import Settings
from service.db import create_engine, jobs, utcnow
from service.dispatch import dispatcher_for
from service.workers import NamedQueues


def queued_row(command: str, queue: str = "default", **overrides: Any) -> dict[str, Any]:
    now = utcnow()
    row: dict[str, Any] = {
        "command": command,
        "argv": None,
        "env": None,
        "queue": queue,
        "priority": 0,
        "state": "queued",
        "attempts": 0,
        "max_retries": 0,
        "timeout": 3600,
        "run_at": now,
        "created_at": now,
        "updated_at": now,
        "lease": 0,
        "idempotency_key": None,
        "output_offset": 0,
        "output_bytes": 0,
    }
    row.update(overrides)
    return row


def insert_queued(
    stack: Stack, commands: list[str], queue: str = "default", callback_url: str | None = None
) -> tuple[int, int]:
    """Insert queued jobs in one transaction (each with `callback_url`, if given); return the
    first and last id.

    The ids are read back, not computed from MAX(id): a deleted row leaves the table's
    AUTO_INCREMENT ahead of its largest id."""
    engine = create_engine(stack.database_url, pool_size=1, max_overflow=0)
    try:
        before = stack.max_job_id()
        with engine.begin() as conn:
            rows = [queued_row(c, queue, callback_url=callback_url) for c in commands]
            conn.execute(jobs.insert(), rows)
            first, last, count = conn.execute(
                sa.select(sa.func.min(jobs.c.id), sa.func.max(jobs.c.id), sa.func.count()).where(
                    jobs.c.id > before
                )
            ).one()
    finally:
        engine.dispose()
    if count != len(commands) or last - first + 1 != count:
        raise RuntimeError(
            f"expected {len(commands)} consecutive new ids, got {count}: {first}..{last}"
        )
    return first, last


def wake(stack: Stack, queue: str) -> None:
    """Wake `queue` as the web does after committing a batch of its jobs (one wake-up per
    queue; the worker thread that takes it wakes the next)."""
    settings = Settings.from_environ(stack.env())
    broker = make_broker(settings)
    engine = create_engine(stack.database_url, pool_size=1, max_overflow=0)
    try:
        named = NamedQueues(engine, settings.lease_timeout)
        if not dispatcher_for(broker, settings, named).wake(queue):
            raise RuntimeError("the broker refused the wake-up")
    finally:
        broker.close()
        engine.dispose()


def count_final(stack: Stack, first: int, last: int) -> int:
    placeholders = ",".join(["%s"] * len(FINAL_STATES))
    return int(
        stack.query(
            f"SELECT COUNT(*) FROM jobs WHERE id BETWEEN %s AND %s AND state IN ({placeholders})",
            (first, last, *FINAL_STATES),
        )[0][0]
    )


def wait_final(
    stack: Stack, first: int, last: int, timeout: float, interval: float = 0.05
) -> tuple[int, bool]:
    """Poll until every job of the range is final (or the timeout); (final count, all final)."""
    want = last - first + 1
    deadline = time.monotonic() + timeout
    while True:
        done = count_final(stack, first, last)
        if done >= want:
            return done, True
        if time.monotonic() >= deadline:
            return done, False
        if stack.worker is not None:
            stack.worker.check_alive()
        time.sleep(interval)


def epoch(value: Any) -> float:
    """A naive UTC datetime from the database, as seconds since the epoch."""
    return value.replace(tzinfo=dt.UTC).timestamp()
