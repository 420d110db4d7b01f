"""The sender's side of the callback outbox: which events are due, the claim of one attempt,
its result, and the purge of old rows. (The events are written by service.jobs, through
service.callbacks, in the transaction that makes a job final; the sender is actors/sender.py.)

A claim is a guarded UPDATE (`lease`, the row's fencing token, as a job's): it moves
`next_attempt_at` past the attempt's longest possible duration, so that the event comes due
again by itself if its sender dies meanwhile, and is then delivered again with the same
webhook-id (at least once). A result is stored only by the sender that still holds the claim.
Times are the database's clock, so that senders on several machines agree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service.callbacks import DELIVERED, FAILED, PENDING
from service.db import (
    callback_deliveries,
    callback_events,
    database_time,
    retry_conflicts,
    transaction,
)

events = callback_events


@dataclass(frozen=True)
class Due:
    id: int
    lease: int
    destination: str


@dataclass(frozen=True)
class Claimed:
    """One attempt of one event, claimed by this sender until `until`."""

    id: int
    lease: int
    attempt: int
    event_id: str
    job_id: int
    url: str
    destination: str
    body: bytes
    until: dt.datetime


def due(engine: Engine, busy: Collection[str], limit: int) -> list[Due]:
    """Events due now (oldest first) for destinations not in `busy` (a plain read: the claim
    is what decides)."""
    with transaction(engine) as conn:
        now = database_time(conn)
        query = (
            sa.select(events.c.id, events.c.lease, events.c.destination)
            .where(events.c.state == PENDING, events.c.next_attempt_at <= now)
            .order_by(events.c.next_attempt_at)
            .limit(limit)
        )
        if busy:
            query = query.where(events.c.destination.notin_(sorted(busy)))
        return [Due(row.id, row.lease, row.destination) for row in conn.execute(query)]


@retry_conflicts
def claim(engine: Engine, item: Due, hold_s: float) -> Claimed | None:
    """Take one attempt of a due event for `hold_s` seconds; None if another sender did."""
    with transaction(engine) as conn:
        now = database_time(conn)
        until = now + dt.timedelta(seconds=hold_s)
        moved = conn.execute(
            events.update()
            .where(
                events.c.id == item.id,
                events.c.lease == item.lease,
                events.c.state == PENDING,
                events.c.next_attempt_at <= now,
            )
            .values(lease=item.lease + 1, attempts=events.c.attempts + 1, next_attempt_at=until)
        ).rowcount
        if moved != 1:
            return None
        row = conn.execute(
            sa.select(
                events.c.attempts, events.c.event_id, events.c.job_id, events.c.url, events.c.body
            ).where(events.c.id == item.id)
        ).one()
    return Claimed(
        item.id,
        item.lease + 1,
        row.attempts,
        row.event_id,
        row.job_id,
        row.url,
        item.destination,
        bytes(row.body),
        until,
    )


@dataclass(frozen=True)
class Attempt:
    """How one attempt went: a status code, or an error when no answer came; and what next
    (`retry_in` seconds, or None: the event is done, `delivered` or not)."""

    status_code: int | None
    error: str | None
    delivered: bool
    retry_in: float | None


@retry_conflicts
def record(engine: Engine, claimed: Claimed, attempt: Attempt) -> bool:
    """Store an attempt in the deliveries, and the event's next step if this sender still
    holds its claim (False otherwise: another sender took the event over meanwhile)."""
    with transaction(engine) as conn:
        now = database_time(conn)
        next_at = None
        if attempt.retry_in is not None:
            next_at = now + dt.timedelta(seconds=attempt.retry_in)
        conn.execute(
            callback_deliveries.insert().values(
                event_id=claimed.event_id,
                job_id=claimed.job_id,
                url=claimed.url,
                attempt=claimed.attempt,
                at=now,
                status_code=attempt.status_code,
                error=attempt.error,
                next_attempt_at=next_at,
            )
        )
        guard = (events.c.id == claimed.id, events.c.lease == claimed.lease)
        if next_at is not None:
            values: dict[str, object] = {"next_attempt_at": next_at}
        else:
            state = DELIVERED if attempt.delivered else FAILED
            values = {"state": state, "finished_at": now, "next_attempt_at": now}
        return conn.execute(events.update().where(*guard).values(values)).rowcount == 1


@retry_conflicts
def purge(engine: Engine, older_than: float, batch: int = 500) -> int:
    """Delete done events and delivery records older than `older_than` seconds (a batch of
    each); return how many rows went."""
    with transaction(engine) as conn:
        cutoff = database_time(conn) - dt.timedelta(seconds=older_than)
        ids = (
            conn.execute(
                sa.select(events.c.id)  # a done event's next_attempt_at is its end
                .where(
                    sa.or_(*(events.c.state == state for state in (DELIVERED, FAILED))),
                    events.c.next_attempt_at < cutoff,
                )
                .limit(batch)
            )
            .scalars()
            .all()
        )
        gone = 0
        if ids:
            gone += conn.execute(events.delete().where(events.c.id.in_(sorted(ids)))).rowcount
        old = (
            conn.execute(
                sa.select(callback_deliveries.c.id)
                .where(callback_deliveries.c.at < cutoff)
                .order_by(callback_deliveries.c.at)
                .limit(batch)
            )
            .scalars()
            .all()
        )
        if old:
            gone += conn.execute(
                callback_deliveries.delete().where(callback_deliveries.c.id.in_(sorted(old)))
            ).rowcount
        return gone
