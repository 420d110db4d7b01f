"""Concurrency keys and queue caps (API.md section 6): the locks and counts behind the claim.

At most `concurrency_limit` jobs of a key (at most a queue's cap of its jobs) are `running`
at once, and the database says so, not the workers: a claim of a job with a key first locks
the key's row of `concurrency_locks` (made on first use), then counts the key's running jobs,
and claims only if there is room. Two claims of one key are serialized by that row lock, and
the second counts after the first has committed (READ COMMITTED: a fresh snapshot per
statement), so they cannot both see room. Nothing is counted in memory: a slot is "freed"
by the very transition that ends the attempt (or hands it back, or declares it lost, or
deletes the job), so it is freed exactly once and cannot leak.

A queued job whose key is full is `held` (a column, in the claim index right after `state`):
the claim passes over held jobs through its index, so a key with 10,000 waiting jobs costs
the claim of other jobs nothing, and a held job takes no worker slot. When an attempt of a key
ends, the same transaction releases the best held job of the key (with the key's row
locked, so that a claim holding jobs at that moment cannot hide the freed slot); the sweeper
releases the held jobs of keys that have room as a safety net (a limit raised by an edit).

Lock order, to keep clear of deadlocks: a queue's row before a key's row; job rows are taken
with SKIP LOCKED (never waited for) while a key's row is held. This module writes `held`
only, never a job's `state` (service.jobs owns those).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Connection

from service.db import concurrency_locks, force_index, jobs
from service.states import State

#: how many queued jobs of a full key one statement holds at a time
HOLD_BATCH = 1000


def key_lock(key: str) -> str:
    return f"key:{key}"


def queue_lock(queue: str) -> str:
    return f"queue:{queue}"


def lock(conn: Connection, name: str) -> None:
    """Lock the row `name` of concurrency_locks until the transaction ends, making it first if
    need be: one statement (an INSERT that finds the row takes it exclusively). SQLite has
    one writer at a time (BEGIN IMMEDIATE): the row only has to exist there."""
    if conn.dialect.name == "sqlite":
        conn.execute(sqlite.insert(concurrency_locks).values(name=name).on_conflict_do_nothing())
        return
    statement = mysql.insert(concurrency_locks).values(name=name)
    conn.execute(statement.on_duplicate_key_update(name=statement.inserted.name))


_RUNNING_OF_KEY = sa.select(sa.func.count()).where(
    jobs.c.concurrency_key == sa.bindparam("key"), jobs.c.state == State.RUNNING
)
_RUNNING_OF_QUEUE = sa.select(sa.func.count()).where(
    jobs.c.queue == sa.bindparam("queue"), jobs.c.state == State.RUNNING
)


def running_of_key(conn: Connection, key: str) -> int:
    return int(conn.execute(force_index(_RUNNING_OF_KEY, "ix_jobs_key"), {"key": key}).scalar_one())


def running_of_queue(conn: Connection, queue: str) -> int:
    statement = force_index(_RUNNING_OF_QUEUE, "ix_jobs_claim")
    return int(conn.execute(statement, {"queue": queue}).scalar_one())


def _waiting_of_key(key: str, held: int, limit: int) -> sa.Select[Any]:
    return (
        sa.select(jobs.c.id)
        .where(
            jobs.c.concurrency_key == key,
            jobs.c.state == State.QUEUED,
            jobs.c.held == held,
        )
        .order_by(jobs.c.priority, jobs.c.run_at, jobs.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def hold(conn: Connection, key: str, running: int) -> int:
    """Hold the queued jobs of `key` that cannot start while `running` of its jobs run (each
    job by its own limit); the caller has locked the key. Rows locked by others are skipped
    (a claim will meet them again). Returns how many were held."""
    query = _waiting_of_key(key, 0, HOLD_BATCH).where(
        sa.func.coalesce(jobs.c.concurrency_limit, 1) <= running
    )
    ids = [int(i) for i in conn.execute(force_index(query, "ix_jobs_key")).scalars()]
    return _set_held(conn, ids, 1)


def release(conn: Connection, key: str, count: int = 1) -> int:
    """Release the best `count` held jobs of `key` that may start now (the caller has locked
    the key): they are claimable again. Returns how many."""
    running = running_of_key(conn, key)
    query = _waiting_of_key(key, 1, count).where(
        sa.func.coalesce(jobs.c.concurrency_limit, 1) > running
    )
    ids = [int(i) for i in conn.execute(force_index(query, "ix_jobs_key")).scalars()]
    return _set_held(conn, ids, 0)


def _set_held(conn: Connection, ids: Sequence[int], held: int) -> int:
    if not ids:
        return 0
    result = conn.execute(
        jobs.update()
        .where(jobs.c.id.in_(sorted(ids)), jobs.c.state == State.QUEUED, jobs.c.held != held)
        .values(held=held)
    )
    return result.rowcount


def free_slot(conn: Connection, key: str | None) -> None:
    """An attempt of `key` has just left `running` in this transaction: release the best held
    job that may take its slot."""
    if key is None:
        return
    lock(conn, key_lock(key))
    release(conn, key)


def held_keys(conn: Connection) -> list[str]:
    """The keys that have held jobs (the sweeper's safety net looks at each)."""
    rows = conn.execute(
        sa.select(jobs.c.concurrency_key)
        .where(jobs.c.state == State.QUEUED, jobs.c.held == 1)
        .group_by(jobs.c.concurrency_key)
        .order_by(jobs.c.concurrency_key)
    ).scalars()
    return [key for key in rows if key is not None]


def in_use(conn: Connection) -> dict[str, int]:
    """Running jobs per key, for the keys that have running jobs now (the metrics)."""
    rows = conn.execute(
        sa.select(jobs.c.concurrency_key, sa.func.count())
        .where(jobs.c.state == State.RUNNING, jobs.c.concurrency_key.is_not(None))
        .group_by(jobs.c.concurrency_key)
    ).all()
    return {key: int(count) for key, count in rows}
