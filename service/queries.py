"""Reads of jobs: one job, a page of jobs, a job's output, and counts for the sweeper."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.db import callback_deliveries, callback_events, jobs, web_secrets
from service.states import FINAL, State


@dataclass(frozen=True, slots=True)
class Job:
    """A job as the API shows it (never its env, nor its output)."""

    id: int
    command: str
    argv: list[str] | None
    queue: str
    priority: int
    state: str
    attempts: int
    max_retries: int
    timeout: int
    exit_code: int | None
    last_error: str | None
    run_at: dt.datetime
    locked_at: dt.datetime | None
    locked_by: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    failed_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    cancel_requested_at: dt.datetime | None
    end_reason: str | None
    exit_signal: int | None
    output_offset: int
    output_bytes: int
    callback_url: str | None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    schedule_id: int | None = None
    #: waiting for a slot of its full key (service.concurrency); not shown
    held: int = 0

    @classmethod
    def from_values(cls, job_id: int, values: dict[str, Any]) -> Job:
        """The job just inserted with these column values."""
        given: dict[str, Any] = {f.name: values.get(f.name) for f in _FIELDS if f.name != "id"}
        return cls(id=job_id, **given)


_FIELDS = fields(Job)
JOB_COLUMNS = tuple(jobs.c[f.name] for f in _FIELDS)


def _select() -> sa.Select[Any]:
    return sa.select(*JOB_COLUMNS)


def get(conn: Connection, job_id: int) -> Job | None:
    row = conn.execute(_select().where(jobs.c.id == job_id)).first()
    return Job(*row) if row is not None else None


def get_by_idempotency_key(conn: Connection, key: str) -> Job | None:
    row = conn.execute(_select().where(jobs.c.idempotency_key == key)).first()
    return Job(*row) if row is not None else None


@dataclass(frozen=True)
class ListFilter:
    state: str | None = None
    queue: str | None = None
    concurrency_key: str | None = None
    schedule_id: int | None = None
    after: int | None = None
    limit: int = 100
    descending: bool = False


def list_jobs(conn: Connection, where: ListFilter) -> tuple[list[Job], bool]:
    """A page of jobs in id order; also whether more remain after it."""
    query = _select()
    if where.state is not None:
        query = query.where(jobs.c.state == where.state)
    if where.queue is not None:
        query = query.where(jobs.c.queue == where.queue)
    if where.concurrency_key is not None:
        query = query.where(jobs.c.concurrency_key == where.concurrency_key)
    if where.schedule_id is not None:
        query = query.where(jobs.c.schedule_id == where.schedule_id)
    if where.after is not None:
        query = query.where(
            jobs.c.id < where.after if where.descending else jobs.c.id > where.after
        )
    order = jobs.c.id.desc() if where.descending else jobs.c.id.asc()
    rows = conn.execute(query.order_by(order).limit(where.limit + 1)).all()
    return [Job(*row) for row in rows[: where.limit]], len(rows) > where.limit


@dataclass(frozen=True)
class StoredOutput:
    """The kept output of a job (`data` starts at byte `offset`), with its state and result."""

    data: bytes
    offset: int
    state: str
    exit_code: int | None
    last_error: str | None

    @property
    def total(self) -> int:
        return self.offset + len(self.data)


def output(conn: Connection, job_id: int) -> StoredOutput | None:
    row = conn.execute(
        sa.select(
            jobs.c.output, jobs.c.output_offset, jobs.c.state, jobs.c.exit_code, jobs.c.last_error
        ).where(jobs.c.id == job_id)
    ).first()
    if row is None:
        return None
    return StoredOutput(
        row.output or b"", row.output_offset, row.state, row.exit_code, row.last_error
    )


def stuck_queues(conn: Connection, before: dt.datetime) -> list[str]:
    """The queues with a job that has been waiting for a worker since before `before`."""
    return list(
        conn.execute(
            sa.select(jobs.c.queue)
            .where(jobs.c.state == State.QUEUED, jobs.c.held == 0, jobs.c.updated_at < before)
            .group_by(jobs.c.queue)
            .order_by(jobs.c.queue)
        ).scalars()
    )


def waiting_queues(conn: Connection) -> list[str]:
    """The queues that have jobs that are not final yet."""
    rows = conn.execute(
        sa.select(jobs.c.queue).where(jobs.c.state.notin_(sorted(FINAL))).group_by(jobs.c.queue)
    ).all()
    return [row.queue for row in rows]


@dataclass(frozen=True)
class QueueStats:
    """A queue as GET /queues shows it (API.md section 11)."""

    name: str
    waiting: int
    running: int
    #: how long its longest-waiting job that could run now has been due; None: none is due
    oldest_waiting_seconds: float | None


LIVE_STATES = (State.SCHEDULED, State.QUEUED, State.RETRYING, State.RUNNING)


def queue_stats(conn: Connection, now: dt.datetime) -> list[QueueStats]:
    """Every queue with jobs that are not final, by name: one grouped read of the live rows
    (ix_jobs_queue_state_id), whatever the number of final ones."""
    due_since = sa.case(
        (
            # a job held for its full concurrency key cannot run now (service.concurrency)
            sa.and_(jobs.c.run_at <= now, jobs.c.held == 0),
            sa.case((jobs.c.created_at > jobs.c.run_at, jobs.c.created_at), else_=jobs.c.run_at),
        ),
        else_=None,
    )
    rows = conn.execute(
        sa.select(jobs.c.queue, jobs.c.state, sa.func.count(), sa.func.min(due_since))
        .where(jobs.c.state.in_(LIVE_STATES))
        .group_by(jobs.c.queue, jobs.c.state)
    ).all()
    waiting: dict[str, int] = {}
    running: dict[str, int] = {}
    due: dict[str, dt.datetime] = {}
    for queue, state, count, first_due in rows:
        if state == State.RUNNING:
            running[queue] = count
            continue
        waiting[queue] = waiting.get(queue, 0) + count
        if first_due is not None and (queue not in due or first_due < due[queue]):
            due[queue] = first_due
    return [
        QueueStats(
            name=name,
            waiting=waiting.get(name, 0),
            running=running.get(name, 0),
            oldest_waiting_seconds=(
                max(0.0, (now - due[name]).total_seconds()) if name in due else None
            ),
        )
        for name in sorted(waiting.keys() | running.keys())
    ]


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt of a callback event (GET /jobs/{id}/deliveries)."""

    event_id: str
    url: str
    attempt: int
    at: dt.datetime
    status_code: int | None
    error: str | None
    next_attempt_at: dt.datetime | None


def deliveries(conn: Connection, job_id: int) -> list[Delivery]:
    """Every delivery attempt of a job's events, to any URL, oldest first."""
    d = callback_deliveries
    rows = conn.execute(
        sa.select(
            d.c.event_id,
            d.c.url,
            d.c.attempt,
            d.c.at,
            d.c.status_code,
            d.c.error,
            d.c.next_attempt_at,
        )
        .where(d.c.job_id == job_id)
        .order_by(d.c.id)
    ).all()
    return [Delivery(*row) for row in rows]


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    #: how long the oldest pending event has waited; None: none pending
    oldest_pending_seconds: float | None


def outbox_stats(conn: Connection, now: dt.datetime) -> OutboxStats:
    """The pending events of the callback outbox: how many, and the age of the oldest."""
    e = callback_events
    count, oldest = conn.execute(
        sa.select(sa.func.count(), sa.func.min(e.c.created_at)).where(e.c.state == "pending")
    ).one()
    age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
    return OutboxStats(int(count), age)


# --- the dashboard (service/web/dashboard) ------------------------------------------------

#: counts by state stop here: past it the dashboard shows "10000+" (no unbounded COUNT(*))
COUNT_CAP = 10_000
#: a search on the command reads the jobs of at most this many ids per page (no full scan)
SEARCH_WINDOW = 50_000


def _narrowed(where: ListFilter) -> list[sa.ColumnElement[bool]]:
    """The conditions of a filter's queue, concurrency key and schedule (not its state)."""
    conditions: list[sa.ColumnElement[bool]] = []
    if where.queue is not None:
        conditions.append(jobs.c.queue == where.queue)
    if where.concurrency_key is not None:
        conditions.append(jobs.c.concurrency_key == where.concurrency_key)
    if where.schedule_id is not None:
        conditions.append(jobs.c.schedule_id == where.schedule_id)
    return conditions


def capped_counts(
    conn: Connection, queue: str | None, cap: int = COUNT_CAP, *, within: ListFilter | None = None
) -> dict[str, int]:
    """How many jobs are in each state (of a queue; or of the queue, concurrency key and
    schedule of `within`), each count at most `cap` + 1: a bounded read of ix_jobs_state_id
    (ix_jobs_queue_state_id, ix_jobs_key, ix_jobs_schedule_id) per state, in one statement,
    however many jobs there are."""
    narrowed = _narrowed(within if within is not None else ListFilter(queue=queue))
    counts = []
    for state in State:
        where = [jobs.c.state == state, *narrowed]
        bounded = sa.select(jobs.c.id).where(*where).limit(cap + 1).subquery()
        counts.append(sa.select(sa.literal(state.value), sa.func.count()).select_from(bounded))
    found = {state: count for state, count in conn.execute(sa.union_all(*counts)).all()}
    return {state.value: found.get(state.value, 0) for state in State}


@dataclass(frozen=True)
class SearchPage:
    jobs: list[Job]
    #: where the next page starts (an id, as `after`), None at the end
    next_after: int | None
    #: how far this page searched: the last id of its range (SEARCH_WINDOW ids at most)
    searched_to: int | None


def search_jobs(
    conn: Connection, where: ListFilter, text: str, window: int = SEARCH_WINDOW
) -> SearchPage:
    """A page of jobs whose command contains `text` (no wildcards), in id order, among the
    `window` ids after `where.after` (of its state, queue, concurrency key and schedule): one
    range of the primary key (or of ix_jobs_state_id, ix_jobs_queue_id), never the whole
    table."""
    lowest, highest = conn.execute(sa.select(sa.func.min(jobs.c.id), sa.func.max(jobs.c.id))).one()
    if lowest is None:
        return SearchPage([], None, None)
    if where.descending:
        top = highest if where.after is None else min(highest, where.after - 1)
        bottom = top - window + 1
        edge, more = bottom, bottom > lowest  # `after` of the next page: ids below it
    else:
        bottom = lowest if where.after is None else max(lowest, where.after + 1)
        top = bottom + window - 1
        edge, more = top, top < highest
    conditions: list[sa.ColumnElement[bool]] = [jobs.c.id.between(bottom, top)]
    if where.state is not None:
        conditions.append(jobs.c.state == where.state)
    conditions.extend(_narrowed(where))
    order = jobs.c.id.desc() if where.descending else jobs.c.id.asc()
    rows = conn.execute(
        _select()
        .where(*conditions, jobs.c.command.contains(text, autoescape=True))
        .order_by(order)
        .limit(where.limit + 1)
    ).all()
    found = [Job(*row) for row in rows[: where.limit]]
    if len(rows) > where.limit:
        return SearchPage(found, found[-1].id, found[-1].id)
    reached = max(bottom, lowest) if where.descending else min(top, highest)
    return SearchPage(found, edge if more else None, reached)


def web_secret(conn: Connection, name: str) -> str | None:
    """A secret the web processes share (table web_secrets, made by the migrations)."""
    value = conn.execute(
        sa.select(web_secrets.c.value).where(web_secrets.c.name == name)
    ).scalar_one_or_none()
    return str(value) if value is not None else None


def ready_queues_of_key(conn: Connection, key: str) -> list[str]:
    """The queues with a job of this concurrency key that may be claimed (queued, not held):
    after a slot of the key is freed, they are the ones to wake (ix_jobs_key)."""
    return list(
        conn.execute(
            sa.select(jobs.c.queue)
            .where(jobs.c.concurrency_key == key, jobs.c.state == State.QUEUED, jobs.c.held == 0)
            .group_by(jobs.c.queue)
            .order_by(jobs.c.queue)
        ).scalars()
    )
