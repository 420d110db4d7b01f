"""Job states and every write that changes them: the one module that owns state transitions.

Each transition is one guarded UPDATE (`WHERE id = ? AND state IN (...)`, plus the `lease` fence
for writes by a worker) whose row count says whether it happened. Nothing else in the code base
writes `state`. Reads live in `service.queries`.

Locking (MySQL/MariaDB, InnoDB, READ COMMITTED for every connection: no gap locks, and a
locking read takes only the rows it returns):

- every write that names its rows by id reaches them through the primary key (`_by_id`: FORCE
  INDEX (PRIMARY)). Left to itself the optimizer walks `ix_jobs_state_id` for `id = ? AND
  state = ?`, locking a secondary index record before the row, while a concurrent UPDATE of
  the same row locks the row first and then its secondary records: the heartbeat and the
  finishing UPDATE deadlocked that way under load;
- the claim is the one locking read that searches (`SELECT ... FOR UPDATE SKIP LOCKED` in
  `ix_jobs_claim` order): it never waits, so it cannot close a cycle;
- a claim in a capped queue, or of a job with a concurrency key, locks that queue's, then that
  key's row of `concurrency_locks` and counts what runs under it (service.concurrency); a
  transaction that holds a key's row takes job rows only with SKIP LOCKED, so it waits for
  nothing but another key's row (a finish of one key then a claim of another: a deadlock
  there is rolled back and run again, like any);
- the sweeper finds its rows with plain reads (no locks) and moves each through the same
  guarded UPDATE by id as everyone else: a row that changed meanwhile fails its guard;
- a multi-row write (a heartbeat, a batch of promotions or deletions, the ends of several
  attempts of one worker process: `end_attempts`) takes its rows in primary key order (a
  batch of ends written by more than one statement locks them all in that order first);
  every other transaction writes one job, and the rows a claim adds are new to it (locked by
  its search, never waited for).

Every function here that writes is one transaction (or a few, each whole), run again on a
deadlock or a lock wait timeout (`retry_conflicts`): the guards make a second run safe. The
heartbeat is not: it runs again a moment later anyway, and a lock wait must not hold it (and
the self-fencing behind it) for several `innodb_lock_wait_timeout`s. A worker's fenced writes
are also run again once on a dropped connection (`retry_fenced`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from service import callbacks, concurrency, queries
from service.db import (
    database_time,
    db_now,
    force_index,
    jobs,
    retry_conflicts,
    retry_fenced,
    transaction,
    utcnow,
)
from service.errors import Conflict, NotFound, ValidationFailed
from service.prepared import Prepared
from service.queries import Job
from service.states import (
    ALLOWED_FROM,
    FINAL,
    NOT_STARTED,
    WAITING,
    EndReason,
    Retention,
    RetryPolicy,
    State,
    StopReason,
)

_W = TypeVar("_W", bound=sa.Update)


def _move_all(
    conn: Connection,
    job_ids: Sequence[int],
    to: State,
    from_states: Iterable[State],
    *guards: sa.ColumnElement[bool],
    **values: Any,
) -> int:
    """Move several jobs at once (the sweeper); returns how many moved."""
    sources = frozenset(from_states)
    _check(to, sources)
    result = conn.execute(
        _by_id(jobs.update())
        .where(jobs.c.id.in_(sorted(job_ids)), jobs.c.state.in_(sorted(sources)), *guards)
        .values(state=to, **values)
    )
    return result.rowcount


def _check(to: State, sources: frozenset[State]) -> None:
    if not sources <= ALLOWED_FROM[to]:
        raise AssertionError(f"transition to {to} from {sorted(sources)} is not allowed")


def _by_id(statement: _W) -> _W:
    """Reach the rows of an UPDATE through the primary key only (see the module docstring)."""
    for dialect in ("mysql", "mariadb"):
        statement = statement.with_hint("FORCE INDEX (PRIMARY)", dialect_name=dialect)
    return statement


class Guard(Enum):
    """Extra conditions of a transition, beyond the job's id and current state."""

    LEASE = "lease"  # the attempt is still the one claimed with this lease
    NOT_CANCELLED = "not_cancelled"  # nobody asked to cancel it
    NOT_STARTED = "not_started"  # it never started
    STALE = "stale"  # its heartbeat is older than a time
    LOCKED_BY = "locked_by"  # the attempt was claimed by this worker


_GUARDS: Mapping[Guard, sa.ColumnElement[bool]] = {
    Guard.LEASE: jobs.c.lease == sa.bindparam("g_lease"),
    Guard.NOT_CANCELLED: jobs.c.cancel_requested_at.is_(None),
    Guard.NOT_STARTED: jobs.c.started_at.is_(None),
    Guard.STALE: jobs.c.heartbeat_at < sa.bindparam("g_stale"),
    Guard.LOCKED_BY: jobs.c.locked_by == sa.bindparam("g_locked_by"),
}
#: a value computed from the row itself: attempts one less than it is. (A started_at given
#: to _move is kept only when the job never started: the first attempt's start.)
ONE_LESS = object()
#: the database's clock (service.db.db_now): for heartbeat_at, which the sweeper compares
DB_NOW = object()


def _in_states(states: frozenset[State]) -> sa.ColumnElement[bool]:
    """`state IN (...)` as plain equalities: an IN list of bound values is an "expanding"
    parameter, re-rendered on every execution even of a cached statement."""
    return sa.or_(*(jobs.c.state == state for state in sorted(states)))


@functools.cache
def _move_statement(
    to: State, sources: frozenset[State], guards: frozenset[Guard], columns: tuple[str, ...]
) -> sa.Update:
    """The UPDATE of a transition, built once per shape: only parameters change per call."""
    _check(to, sources)
    values: dict[str, Any] = {"state": to}
    for name in columns:
        if name == "started_at":
            values[name] = sa.func.coalesce(jobs.c.started_at, sa.bindparam("v_started_at"))
        elif name.endswith("@now"):
            values[name.removesuffix("@now")] = db_now()
        elif name == "attempts-1":
            values["attempts"] = jobs.c.attempts - 1
        else:
            values[name] = sa.bindparam(f"v_{name}", type_=jobs.c[name].type)
    return (
        _by_id(jobs.update())
        .where(
            jobs.c.id == sa.bindparam("job_id"),
            _in_states(sources),
            *(_GUARDS[guard] for guard in sorted(guards, key=lambda g: g.value)),
        )
        .values(values)
    )


def _move(
    conn: Connection,
    job_id: int,
    to: State,
    from_states: Iterable[State],
    guards: Mapping[Guard, Any] | None = None,
    **values: Any,
) -> bool:
    """The guarded UPDATE behind every transition of one job; True when it moved."""
    guards = guards or {}
    columns = []
    params: dict[str, Any] = {"job_id": job_id}
    for name, value in values.items():
        if value is ONE_LESS:
            columns.append("attempts-1")
            continue
        if value is DB_NOW:
            columns.append(f"{name}@now")
            continue
        columns.append(name)
        params[f"v_{name}"] = value
    if Guard.LEASE in guards:
        params["g_lease"] = guards[Guard.LEASE]
    if Guard.STALE in guards:
        params["g_stale"] = guards[Guard.STALE]
    if Guard.LOCKED_BY in guards:
        params["g_locked_by"] = guards[Guard.LOCKED_BY]
    statement = _move_statement(to, frozenset(from_states), frozenset(guards), tuple(columns))
    return conn.execute(statement, params).rowcount == 1


def _require(conn: Connection, job_id: int) -> Job:
    job = queries.get(conn, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def _ended(
    conn: Connection,
    job_id: int,
    state: State,
    retention: Retention | None,
    urls: Sequence[str] = (),
    now: dt.datetime | None = None,
    job: Job | None = None,
) -> State:
    """A job has just become `state` (final): write the event of its callbacks (`urls`) to the
    outbox, its body rendered from the job as it is now; then delete the job there and then,
    in the same transaction, if its retention is 0 (clients that poll until 404, as
    delayed_job's did). Otherwise the sweeper purges it once its retention is over
    (`purge_finished`)."""
    if urls:
        if job is None:  # not known here: as this transaction has just left it
            job = queries.get(conn, job_id)
        assert job is not None
        callbacks.record(conn, job, urls, now or utcnow())
    if retention is not None and retention.at_once(state):
        # the row is locked already, by the UPDATE that ended it (MariaDB takes no index hint
        # in a DELETE; a primary key equality is its plan anyway)
        conn.execute(jobs.delete().where(jobs.c.id == job_id, jobs.c.state == state))
    return state


# --- clients ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """A validated job to create (the web validates requests into it: service.web.schemas)."""

    command: str
    argv: list[str] | None
    queue: str
    priority: int
    timeout: int
    max_retries: int
    run_at: dt.datetime | None
    env: dict[str, str] | None
    #: API.md section 6: at most `concurrency_limit` jobs of the key run at once
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    #: the schedule that made it (API.md section 7)
    schedule_id: int | None = None
    #: where to POST the event of its final state (API.md section 8)
    callback_url: str | None = None


#: built once: the hot path of POST /jobs executes them with new values only
INSERT_JOB = jobs.insert()
INSERT_JOBS = jobs.insert().returning(jobs.c.id, sort_by_parameter_order=True)


def _new_job(spec: JobSpec, now: dt.datetime, idempotency_key: str | None) -> dict[str, Any]:
    run_at = spec.run_at or now
    return {
        "command": spec.command,
        "argv": spec.argv,
        "env": spec.env,
        "queue": spec.queue,
        "priority": spec.priority,
        "state": State.SCHEDULED if run_at > now else State.QUEUED,
        "attempts": 0,
        "max_retries": spec.max_retries,
        "timeout": spec.timeout,
        "run_at": run_at,
        "created_at": now,
        "updated_at": now,
        "lease": 0,
        "idempotency_key": idempotency_key,
        "output_offset": 0,
        "output_bytes": 0,
        "concurrency_key": spec.concurrency_key,
        "concurrency_limit": spec.concurrency_limit,
        "held": 0,
        "schedule_id": spec.schedule_id,
        "callback_url": spec.callback_url,
    }


@retry_conflicts
def create(engine: Engine, spec: JobSpec, idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Store a new job; with an idempotency key already used, return that job instead.

    Returns the job and whether it was created now.
    """
    values = _new_job(spec, utcnow(), idempotency_key)
    if idempotency_key is not None:
        with transaction(engine) as conn:
            existing = queries.get_by_idempotency_key(conn, idempotency_key)
        if existing is not None:
            return existing, False
    try:
        with transaction(engine) as conn:
            key = conn.execute(INSERT_JOB, values).inserted_primary_key
            assert key is not None
            job_id = int(key[0])
    except IntegrityError:
        if idempotency_key is None:
            raise
        with transaction(engine) as conn:  # a concurrent request with the same key won
            existing = queries.get_by_idempotency_key(conn, idempotency_key)
        if existing is None:
            raise
        return existing, False
    return Job.from_values(job_id, values), True


def create_in(conn: Connection, spec: JobSpec, now: dt.datetime) -> Job:
    """Store a new job within a transaction of the caller's (a schedule's tick: the job and
    the tick commit together)."""
    values = _new_job(spec, now, None)
    key = conn.execute(INSERT_JOB, values).inserted_primary_key
    assert key is not None
    return Job.from_values(int(key[0]), values)


@retry_conflicts
def create_many(engine: Engine, specs: Sequence[JobSpec]) -> list[Job]:
    """Store several new jobs (without idempotency keys) in one statement and one commit."""
    now = utcnow()
    rows = [_new_job(spec, now, None) for spec in specs]
    with transaction(engine) as conn:
        ids = conn.execute(INSERT_JOBS, rows).scalars().all()
    return [Job.from_values(job_id, values) for job_id, values in zip(ids, rows, strict=True)]


@retry_conflicts
def edit(engine: Engine, job_id: int, changes: dict[str, Any]) -> Job:
    """Change a job that has not started yet; Conflict once it has."""
    with transaction(engine) as conn:
        now = utcnow()
        values = dict(changes, updated_at=now)
        if "concurrency_key" in changes or "concurrency_limit" in changes:
            values["held"] = 0  # its key or limit changed: let the claim judge it again
            current = _require(conn, job_id)
            if "concurrency_key" not in changes and current.concurrency_key is None:
                raise ValidationFailed({"concurrency_limit": ["needs a concurrency_key"]})
            if "concurrency_limit" not in changes and current.concurrency_limit is None:
                values["concurrency_limit"] = 1
        if "run_at" in changes:
            to = State.SCHEDULED if changes["run_at"] > now else State.QUEUED
        else:
            current = _require(conn, job_id)
            to = State(current.state) if current.state in NOT_STARTED else State.QUEUED
        if not _move(conn, job_id, to, NOT_STARTED, {Guard.NOT_STARTED: None}, **values):
            job = _require(conn, job_id)
            raise Conflict(
                f"job {job_id} has started already ({job.state}): it can no longer change"
            )
        return _require(conn, job_id)


@retry_conflicts
def cancel(
    engine: Engine,
    job_id: int,
    retention: Retention | None = None,
    callback_url: str | None = None,
) -> Job:
    """Cancel a waiting job at once, or ask the worker running it to stop it. Returns the job
    as it is now (a job deleted as it was cancelled, by `retention`, as it was then).
    `callback_url`: JOBRUNNER_CALLBACK_URL, which gets the event as the job's own does."""
    with transaction(engine) as conn:
        now = utcnow()
        cancelled = _move(
            conn,
            job_id,
            State.CANCELLED,
            WAITING,
            last_error="cancelled",
            finished_at=now,
            updated_at=now,
        )
        if not cancelled:
            result = conn.execute(
                _by_id(jobs.update())
                .where(jobs.c.id == job_id, jobs.c.state == State.RUNNING)
                .values(cancel_requested_at=sa.func.coalesce(jobs.c.cancel_requested_at, now))
            )
            if result.rowcount != 1:
                job = _require(conn, job_id)
                raise Conflict(f"job {job_id} is already {job.state}")
        job = _require(conn, job_id)
        if cancelled:
            urls = callbacks.urls_for(job.callback_url, callback_url)
            _ended(conn, job_id, State.CANCELLED, retention, urls, now, job)
        return job


@retry_conflicts
def retry(engine: Engine, job_id: int) -> Job:
    """Queue a failed or cancelled job again, as a new run with fresh attempts and output."""
    with transaction(engine) as conn:
        now = utcnow()
        moved = _move(
            conn,
            job_id,
            State.QUEUED,
            {State.FAILED, State.CANCELLED},
            attempts=0,
            exit_code=None,
            end_reason=None,
            exit_signal=None,
            last_error=None,
            run_at=now,
            locked_at=None,
            locked_by=None,
            cancel_requested_at=None,
            finished_at=None,
            failed_at=None,
            output=None,
            output_offset=0,
            output_bytes=0,
            held=0,
            updated_at=now,
        )
        if not moved:
            job = _require(conn, job_id)
            raise Conflict(f"job {job_id} is {job.state}: only failed or cancelled jobs can retry")
        return _require(conn, job_id)


@retry_conflicts
def delete(engine: Engine, job_id: int) -> State:
    """Delete a job and its output; return the state it had (a running one must be stopped)."""
    with transaction(engine) as conn:
        row = conn.execute(
            sa.select(jobs.c.state, jobs.c.concurrency_key)
            .where(jobs.c.id == job_id)
            .with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        conn.execute(jobs.delete().where(jobs.c.id == job_id))
        if row.state == State.RUNNING:
            concurrency.free_slot(conn, row.concurrency_key)
        return State(row.state)


# --- workers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker needs to run one attempt of a job it has claimed."""

    id: int
    lease: int
    attempt: int
    max_retries: int
    command: str
    argv: list[str] | None
    env: dict[str, str] | None
    timeout: int
    queue: str
    output: bytes
    output_offset: int
    #: its own callback_url (API.md section 8)
    callback_url: str | None
    #: when it was due (its creation, or the end of its backoff), and when this attempt began
    run_at: dt.datetime
    claimed_at: dt.datetime
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    schedule_id: int | None = None
    #: the rest of the job resource as the claim left it, for the event of its end (`_as_ended`)
    priority: int = 0
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None  # the first attempt's start
    worker: str = ""


_CLAIM_COLUMNS = (
    jobs.c.id,
    jobs.c.lease,
    jobs.c.attempts,
    jobs.c.max_retries,
    jobs.c.command,
    jobs.c.argv,
    jobs.c.env,
    jobs.c.timeout,
    jobs.c.output,
    jobs.c.output_offset,
    jobs.c.run_at,
    jobs.c.concurrency_key,
    jobs.c.concurrency_limit,
    jobs.c.schedule_id,
    jobs.c.callback_url,
    jobs.c.priority,
    jobs.c.created_at,
    jobs.c.started_at,
)


# In index order the scan stops at the first row it can lock; any other plan (a filesort)
# would lock every waiting row and leave concurrent claims empty-handed.
CLAIM_CANDIDATE = (
    force_index(sa.select(*_CLAIM_COLUMNS), "ix_jobs_claim")
    .where(
        jobs.c.queue == sa.bindparam("queue"),
        jobs.c.state == State.QUEUED,
        jobs.c.held == 0,  # waiting for a slot of its full key (service.concurrency)
        jobs.c.run_at <= sa.bindparam("now", type_=sa.DateTime),
    )
    .order_by(jobs.c.priority, jobs.c.run_at, jobs.c.id)
    .limit(1)
    .with_for_update(skip_locked=True)
)


@functools.cache
def _claim_candidates(count: int) -> Prepared:
    """The same search for up to `count` jobs at once (`_claim_several`), built once a count
    (as the other statements of a batch of ends, run by service.prepared)."""
    return Prepared(CLAIM_CANDIDATE.limit(count))


@retry_conflicts
def claim_next(
    engine: Engine, queue: str, worker: str, cap: int | None = None
) -> ClaimedJob | None:
    """Start the best waiting job of a queue: lowest priority, then earliest run_at, then id.

    `FOR UPDATE SKIP LOCKED` lets concurrent workers take different rows; the guarded UPDATE
    makes a second claim of the same row impossible whatever the broker delivers. With `cap`,
    nothing starts while `cap` jobs of the queue run; a job whose concurrency key is full is
    held instead, and the next one tried (service.concurrency).
    """
    with transaction(engine) as conn:
        return _claim_in(conn, NextClaim(queue, worker, cap))


@dataclass(frozen=True)
class NextClaim:
    """Which queue a worker thread claims its next job from, and under what name; `cap`: the
    queue's JOBRUNNER_QUEUE_CONCURRENCY, if it has one."""

    queue: str
    worker: str
    cap: int | None = None


#: how often one claim may meet a full key (holding up to concurrency.HOLD_BATCH of its jobs
#: each time) before it gives up for now
MAX_FULL_KEYS = 100


def _claim_in(conn: Connection, claim: NextClaim) -> ClaimedJob | None:
    now = utcnow()
    if claim.cap is not None:
        concurrency.lock(conn, concurrency.queue_lock(claim.queue))
        if concurrency.running_of_queue(conn, claim.queue) >= claim.cap:
            return None
    for _ in range(MAX_FULL_KEYS):
        found = _claim_candidates(1).rows(conn, {"queue": claim.queue, "now": now})
        if not found:
            return None
        row = found[0]
        claimed = _claim_candidate(conn, claim, row, now)
        if claimed is not None:
            return claimed
    return None


def _claim_candidate(
    conn: Connection, claim: NextClaim, row: Any, now: dt.datetime
) -> ClaimedJob | None:
    """Claim a row the search has locked, unless its concurrency key is full: then hold it
    and the key's other waiting jobs that cannot start (None)."""
    key = row.concurrency_key
    if key is None:
        return _claim_row(conn, claim, row, now)
    concurrency.lock(conn, concurrency.key_lock(key))
    running = concurrency.running_of_key(conn, key)
    if running < (row.concurrency_limit or 1):
        return _claim_row(conn, claim, row, now)
    concurrency.hold(conn, key, running)  # this row among them: it is locked by us
    return None


def _claim_rows(
    conn: Connection, claim: NextClaim, rows: Sequence[Any], now: dt.datetime
) -> list[ClaimedJob]:
    """Claim rows that the search has locked (and whose keys have room): one UPDATE for all.
    (Locked by this transaction, none can have moved since the search: the row count is
    checked all the same, and a mismatch rolls the transaction back.)"""
    if not rows:
        return []
    params: dict[str, Any] = {f"id_{i}": row.id for i, row in enumerate(rows)}
    params.update(now=now, worker=claim.worker)
    moved = _claim_statement(len(rows)).execute(conn, params).rowcount
    if moved != len(rows):
        raise AssertionError(f"claimed {moved} of {len(rows)} locked rows")
    return [_claimed_job(claim, row, now) for row in rows]


def _ids(count: int) -> list[sa.BindParameter[int]]:
    """`id_0` ... : the ids of a statement over `count` rows, as plain parameters (an
    "expanding" IN list would be rendered again on every execution)."""
    return [sa.bindparam(f"id_{i}", type_=sa.BigInteger) for i in range(count)]


@functools.cache
def _claim_statement(count: int) -> Prepared:
    """The UPDATE of a claim (queued to running) of `count` rows (`id_0` ...), built once."""
    _check(State.RUNNING, frozenset({State.QUEUED}))
    now = sa.bindparam("now", type_=sa.DateTime)
    return Prepared(
        _by_id(jobs.update())
        .where(jobs.c.id.in_(_ids(count)), jobs.c.state == State.QUEUED)
        .values(
            state=State.RUNNING,
            attempts=jobs.c.attempts + 1,
            lease=jobs.c.lease + 1,
            locked_at=now,
            locked_by=sa.bindparam("worker", type_=sa.String),
            heartbeat_at=db_now(),
            started_at=sa.func.coalesce(jobs.c.started_at, now),  # the first attempt's start
            cancel_requested_at=None,
            updated_at=now,
        )
    )


def _claim_several(conn: Connection, claim: NextClaim, count: int) -> list[ClaimedJob]:
    """Up to `count` jobs of a queue, best first, as `count` claims in a row would take them:
    one search locks them all when the queue has no cap (a capped queue counts its running
    jobs before each claim)."""
    claimed: list[ClaimedJob] = []
    if count > 1 and claim.cap is None:
        now = utcnow()
        params = {"queue": claim.queue, "now": now}
        rows = _claim_candidates(count).rows(conn, params)
        claimed.extend(
            _claim_rows(conn, claim, [r for r in rows if r.concurrency_key is None], now)
        )
        for row in rows:
            if row.concurrency_key is not None:
                job = _claim_candidate(conn, claim, row, now)
                if job is not None:
                    claimed.append(job)
        if len(rows) < count:
            return claimed  # the queue has nothing more ready
    while len(claimed) < count:  # one by one: a capped queue, or rows that were held
        job = _claim_in(conn, claim)
        if job is None:
            break
        claimed.append(job)
    return claimed


def _claim_row(conn: Connection, claim: NextClaim, row: Any, now: dt.datetime) -> ClaimedJob:
    return _claim_rows(conn, claim, [row], now)[0]


def _claimed_job(claim: NextClaim, row: Any, now: dt.datetime) -> ClaimedJob:
    """The attempt a claim of `row` (as the search read it) has just started."""
    return ClaimedJob(
        id=row.id,
        lease=row.lease + 1,
        attempt=row.attempts + 1,
        max_retries=row.max_retries,
        command=row.command,
        argv=row.argv,
        env=row.env,
        timeout=row.timeout,
        queue=claim.queue,
        output=row.output or b"",
        output_offset=row.output_offset,
        callback_url=row.callback_url,
        run_at=row.run_at,
        claimed_at=now,
        concurrency_key=row.concurrency_key,
        concurrency_limit=row.concurrency_limit,
        schedule_id=row.schedule_id,
        priority=row.priority,
        created_at=row.created_at,
        started_at=row.started_at or now,
        worker=claim.worker,
    )


def _fenced(job: ClaimedJob) -> dict[Guard, Any]:
    return {Guard.LEASE: job.lease}


@dataclass(frozen=True)
class OutputSnapshot:
    """The kept tail of a job's output: `data` starts at byte `offset` of everything printed."""

    data: bytes
    offset: int

    @property
    def total(self) -> int:
        return self.offset + len(self.data)


@retry_fenced
def save_output(engine: Engine, job: ClaimedJob, output: OutputSnapshot) -> bool:
    """Store the output so far; False if the attempt is no longer ours (lost, deleted)."""
    with transaction(engine) as conn:
        result = conn.execute(
            _by_id(jobs.update())
            .where(jobs.c.id == job.id, jobs.c.state == State.RUNNING, jobs.c.lease == job.lease)
            .values(output=output.data, output_offset=output.offset, output_bytes=output.total)
        )
        return result.rowcount == 1


def heartbeat(engine: Engine, leases: Mapping[int, int]) -> dict[int, StopReason]:
    """Refresh the heartbeat of running attempts; return the ones that must stop, and why.

    `cancelled`: a client cancelled or deleted the job. `lost`: the attempt is no longer the
    one this worker claimed (the sweeper gave it up for lost, and it may run elsewhere now).
    """
    if not leases:
        return {}
    with transaction(engine) as conn:
        conn.execute(
            _by_id(jobs.update())
            .where(
                jobs.c.id.in_(sorted(leases)),
                sa.tuple_(jobs.c.id, jobs.c.lease).in_(sorted(leases.items())),
                jobs.c.state == State.RUNNING,
            )
            .values(heartbeat_at=db_now())
        )
        rows = conn.execute(
            sa.select(jobs.c.id, jobs.c.lease, jobs.c.state, jobs.c.cancel_requested_at).where(
                jobs.c.id.in_(list(leases))
            )
        ).all()
    found = {row.id: row for row in rows}
    stops: dict[int, StopReason] = {}
    for job_id, lease in leases.items():
        row = found.get(job_id)
        if row is None:
            stops[job_id] = StopReason.CANCELLED  # deleted
        elif row.lease != lease or row.state != State.RUNNING:
            stops[job_id] = StopReason.LOST
        elif row.cancel_requested_at is not None:
            stops[job_id] = StopReason.CANCELLED
    return stops


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as the worker saw it: `reason` for programs, `error` (the job's
    `last_error`) for people."""

    succeeded: bool
    cancelled: bool = False
    exit_code: int | None = None
    error: str | None = None
    reason: EndReason = EndReason.EXITED
    #: the signal that ended the command, when `reason` is SIGNAL
    signal: int | None = None


#: the outcome the sweeper records for an attempt whose worker stopped sending heartbeats
WORKER_LOST = Outcome(succeeded=False, error="worker lost", reason=EndReason.WORKER_LOST)


def _end_attempt(
    conn: Connection,
    job_id: int,
    attempt: int,
    max_retries: int,
    fence: Mapping[Guard, Any],
    outcome: Outcome,
    policy: RetryPolicy,
    now: dt.datetime,
    values: dict[str, Any],
    retention: Retention | None = None,
    key: str | None = None,
    urls: Sequence[str] = (),
    claimed: ClaimedJob | None = None,
) -> State | None:
    """Move a running job to the state its attempt's outcome calls for (`_end_transition`);
    None if the guards did not let it. A final state writes the event of its callbacks
    (`urls`) to the outbox, and with a retention of 0 deletes the job at once (`_ended`); a
    job that moved frees the slot of its concurrency key (`key`)."""
    values = {**values, **_outcome_values(outcome, now)}
    state = _end_transition(conn, job_id, attempt, max_retries, fence, outcome, policy, now, values)
    if state is None:
        return None
    if state in FINAL:
        ended = _as_ended(claimed, state, values, now) if urls and claimed else None
        _ended(conn, job_id, state, retention, urls, now, ended)
    concurrency.free_slot(conn, key)
    return state


def _end_transition(
    conn: Connection,
    job_id: int,
    attempt: int,
    max_retries: int,
    fence: Mapping[Guard, Any],
    outcome: Outcome,
    policy: RetryPolicy,
    now: dt.datetime,
    values: dict[str, Any],
) -> State | None:
    """The guarded UPDATE of an attempt's end: succeeded; retrying while retries remain
    (unless a cancel was asked for meanwhile); cancelled; or failed. A cancel sets
    `values["last_error"]`, for the event of the end."""
    running = {State.RUNNING}
    if outcome.succeeded:
        moved = _move(conn, job_id, State.SUCCEEDED, running, fence, finished_at=now, **values)
        return State.SUCCEEDED if moved else None
    retries_left = attempt <= max_retries
    if not outcome.cancelled and retries_left:
        run_at = now + dt.timedelta(seconds=policy.delay(attempt))
        not_cancelled = {**fence, Guard.NOT_CANCELLED: None}
        moved = _move(conn, job_id, State.RETRYING, running, not_cancelled, run_at=run_at, **values)
        if moved:
            return State.RETRYING
    if outcome.cancelled or retries_left:  # a cancel asked for while the command failed
        values["last_error"] = "cancelled"
        moved = _move(conn, job_id, State.CANCELLED, running, fence, finished_at=now, **values)
        return State.CANCELLED if moved else None
    moved = _move(
        conn, job_id, State.FAILED, running, fence, finished_at=now, failed_at=now, **values
    )
    return State.FAILED if moved else None


def _outcome_values(outcome: Outcome, now: dt.datetime) -> dict[str, Any]:
    """The columns that record how an attempt ended (besides `state` and its times)."""
    return {
        "exit_code": outcome.exit_code,
        "last_error": outcome.error,
        "end_reason": outcome.reason,
        "exit_signal": outcome.signal,
        "updated_at": now,
    }


def _output_values(output: OutputSnapshot) -> dict[str, Any]:
    """The columns a worker writes as an attempt ends: its output, and no heartbeat."""
    return {
        "heartbeat_at": None,
        "output": output.data,
        "output_offset": output.offset,
        "output_bytes": output.total,
    }


def _as_ended(job: ClaimedJob, state: State, values: Mapping[str, Any], now: dt.datetime) -> Job:
    """The job as the UPDATE that ended its attempt left it, from what the claim read and the
    UPDATE wrote: the event of its end needs no read of the row (the finish is on every job's
    path). A running job cannot be edited; a cancel asked for while it ran is known only when
    the attempt ends cancelled (a cancel that came as it succeeded or failed anyway is not
    shown in the event's `cancel_requested`)."""
    return Job(
        id=job.id,
        command=job.command,
        argv=job.argv,
        queue=job.queue,
        priority=job.priority,
        state=state,
        attempts=job.attempt,
        max_retries=job.max_retries,
        timeout=job.timeout,
        exit_code=values["exit_code"],
        last_error=values["last_error"],
        run_at=job.run_at,
        locked_at=job.claimed_at,
        locked_by=job.worker,
        started_at=job.started_at or job.claimed_at,
        finished_at=now,
        failed_at=now if state == State.FAILED else None,
        created_at=job.created_at or job.claimed_at,
        updated_at=now,
        cancel_requested_at=now if state == State.CANCELLED else None,
        end_reason=values["end_reason"],
        exit_signal=values["exit_signal"],
        output_offset=values["output_offset"],
        output_bytes=values["output_bytes"],
        concurrency_key=job.concurrency_key,
        concurrency_limit=job.concurrency_limit,
        schedule_id=job.schedule_id,
        callback_url=job.callback_url,
    )


@retry_fenced
def finish(
    engine: Engine,
    job: ClaimedJob,
    outcome: Outcome,
    output: OutputSnapshot,
    policy: RetryPolicy,
    retention: Retention | None = None,
    callback_url: str | None = None,
) -> State | None:
    """Record the end of an attempt; return the job's new state, None if it was not ours.
    (With `retention`, a job whose final state is kept 0 seconds is deleted at once; a final
    state writes the event for the job's callback_url and `callback_url` to the outbox.)"""
    with transaction(engine) as conn:
        return _finish_in(conn, job, outcome, output, policy, retention, callback_url)


def finish_and_claim(
    engine: Engine,
    job: ClaimedJob,
    outcome: Outcome,
    output: OutputSnapshot,
    policy: RetryPolicy,
    then: NextClaim,
    retention: Retention | None = None,
    callback_url: str | None = None,
) -> tuple[State | None, ClaimedJob | None]:
    """`finish`, then `claim_next` of `then`, in one transaction: `end_attempts` of one end."""
    ends = [AttemptEnd(job, outcome, output, then)]
    return end_attempts(engine, ends, policy, retention, callback_url)[0]


@dataclass(frozen=True)
class AttemptEnd:
    """An attempt's end to record, and the claim to make with it (`then`), for `end_attempts`."""

    job: ClaimedJob
    outcome: Outcome
    output: OutputSnapshot
    then: NextClaim | None = None


@retry_conflicts
def end_attempts(
    engine: Engine,
    ends: Sequence[AttemptEnd],
    policy: RetryPolicy,
    retention: Retention | None = None,
    callback_url: str | None = None,
) -> list[tuple[State | None, ClaimedJob | None]]:
    """`finish_and_claim` of several attempts in one transaction, a result for each end in
    order: what the threads of a worker process ended at about the same time costs one commit,
    and their next claims of one queue one search (actors.bookkeeper). The rows are written in
    id order, as the heartbeat takes them; a claim that finds less than asked gives None to the
    last ends of its queue."""
    with transaction(engine) as conn:
        capped = sorted({end.then.queue for end in ends if end.then and end.then.cap is not None})
        if capped and any(end.job.concurrency_key is not None for end in ends):
            for queue in capped:  # a queue's lock before a key's (service.concurrency)
                concurrency.lock(conn, concurrency.queue_lock(queue))
        alike, alone = _alike_successes(ends, retention, callback_url)
        if len(alike) + bool(alone) > 1:
            # the rows of several statements, locked in id order first, as the heartbeat
            # locks them: one statement after another would not take them in that order
            _lock_in_id_order(conn, [end.job.id for end in ends])
        states: dict[int, State | None] = {}
        for group in alike:
            states.update(_succeed_together(conn, group, callback_url))
        for end in sorted(alone, key=lambda end: end.job.id):
            states[end.job.id] = _finish_in(
                conn, end.job, end.outcome, end.output, policy, retention, callback_url
            )
        wanted: dict[NextClaim, int] = {}
        for end in ends:
            if end.then is not None:
                wanted[end.then] = wanted.get(end.then, 0) + 1
        claimed = {then: _claim_several(conn, then, count) for then, count in wanted.items()}
    results: list[tuple[State | None, ClaimedJob | None]] = []
    for end in ends:
        mine = claimed.get(end.then) if end.then is not None else None
        results.append((states[end.job.id], mine.pop(0) if mine else None))
    return results


def _alike_successes(
    ends: Sequence[AttemptEnd], retention: Retention | None, callback_url: str | None
) -> tuple[list[list[AttemptEnd]], list[AttemptEnd]]:
    """The ends that one UPDATE can record together (`_succeed_together`): attempts that
    succeeded with the same output, of jobs without a concurrency key that are kept once
    final; groups of two or more, and the rest."""
    groups: dict[tuple[Outcome, bytes, int], list[AttemptEnd]] = {}
    alone: list[AttemptEnd] = []
    kept = retention is None or not retention.at_once(State.SUCCEEDED)
    for end in ends:
        if end.outcome.succeeded and end.job.concurrency_key is None and kept:
            groups.setdefault((end.outcome, end.output.data, end.output.offset), []).append(end)
        else:
            alone.append(end)
    alike = []
    for group in groups.values():
        if len(group) > 1:
            alike.append(group)
        else:
            alone.extend(group)
    return alike, alone


def _lock_in_id_order(conn: Connection, job_ids: Sequence[int]) -> None:
    conn.execute(
        force_index(sa.select(jobs.c.id), "PRIMARY")
        .where(jobs.c.id.in_(sorted(job_ids)))
        .order_by(jobs.c.id)
        .with_for_update()
    )


@functools.cache
def _succeed_statement(columns: tuple[str, ...], count: int) -> Prepared:
    """The UPDATE of `count` attempts that succeeded alike (running to succeeded), each row
    (`id_0` ...) fenced by its lease (`lease_0` ...), built once."""
    _check(State.SUCCEEDED, frozenset({State.RUNNING}))
    ids = _ids(count)
    fences = [(id_, sa.bindparam(f"lease_{i}", type_=sa.BigInteger)) for i, id_ in enumerate(ids)]
    values: dict[str, Any] = {
        name: sa.bindparam(f"v_{name}", type_=jobs.c[name].type) for name in columns
    }
    return Prepared(
        _by_id(jobs.update())
        .where(
            jobs.c.id.in_(ids),
            sa.or_(*(sa.and_(jobs.c.id == id_, jobs.c.lease == lease) for id_, lease in fences)),
            jobs.c.state == State.RUNNING,
        )
        .values(state=State.SUCCEEDED, finished_at=sa.bindparam("now", type_=sa.DateTime), **values)
    )


def _succeed_together(
    conn: Connection, group: Sequence[AttemptEnd], callback_url: str | None
) -> dict[int, State | None]:
    """`_finish_in` of attempts that succeeded alike (`_alike_successes`), in one UPDATE: the
    transition to succeeded, each row fenced by its own lease, then the events of their
    callbacks in one INSERT. Those it did not move (lost or deleted meanwhile) are read back:
    None for them, and no event."""
    now = utcnow()
    first = group[0]
    values = {**_output_values(first.output), **_outcome_values(first.outcome, now)}
    leases = {end.job.id: end.job.lease for end in group}
    params = {f"v_{name}": value for name, value in values.items()}
    for i, (id_, lease) in enumerate(sorted(leases.items())):
        params[f"id_{i}"], params[f"lease_{i}"] = id_, lease
    params["now"] = now
    moved = _succeed_statement(tuple(values), len(leases)).execute(conn, params).rowcount
    states: dict[int, State | None] = dict.fromkeys(leases, State.SUCCEEDED)
    if moved != len(group):
        states = _succeeded_of(conn, leases, now)
    ended = [
        (_as_ended(end.job, State.SUCCEEDED, values, now), urls)
        for end in group
        if states[end.job.id] is not None
        and (urls := callbacks.urls_for(end.job.callback_url, callback_url))
    ]
    callbacks.record_many(conn, ended, now)
    return states


def _succeeded_of(
    conn: Connection, leases: Mapping[int, int], now: dt.datetime
) -> dict[int, State | None]:
    """Which of the rows `_succeed_together` tried it moved."""
    rows = conn.execute(
        sa.select(jobs.c.id, jobs.c.lease, jobs.c.state, jobs.c.finished_at).where(
            jobs.c.id.in_(sorted(leases))
        )
    ).all()
    ours = {
        row.id
        for row in rows
        if row.state == State.SUCCEEDED and row.lease == leases[row.id] and row.finished_at == now
    }
    return {id_: State.SUCCEEDED if id_ in ours else None for id_ in leases}


def _finish_in(
    conn: Connection,
    job: ClaimedJob,
    outcome: Outcome,
    output: OutputSnapshot,
    policy: RetryPolicy,
    retention: Retention | None,
    callback_url: str | None,
) -> State | None:
    values = _output_values(output)
    return _end_attempt(
        conn,
        job.id,
        job.attempt,
        job.max_retries,
        _fenced(job),
        outcome,
        policy,
        utcnow(),
        values,
        retention,
        job.concurrency_key,
        callbacks.urls_for(job.callback_url, callback_url),
        job,
    )


@retry_fenced
def hand_back(engine: Engine, job: ClaimedJob) -> bool:
    """Put a job whose attempt was stopped by a worker shutdown back in its queue.

    The attempt does not count against the job's retries.
    """
    with transaction(engine) as conn:
        now = utcnow()
        moved = _move(
            conn,
            job.id,
            State.QUEUED,
            {State.RUNNING},
            _fenced(job),
            attempts=ONE_LESS,
            run_at=now,
            heartbeat_at=None,
            updated_at=now,
        )
        if moved:
            concurrency.free_slot(conn, job.concurrency_key)
        return moved


def release_unregistered(
    engine: Engine, worker: str, known: Collection[int], older_than: float
) -> list[tuple[int, str]]:
    """Put back in their queues the running attempts claimed under this worker's name more
    than `older_than` seconds ago that the worker does not know of (`known`: the attempts it
    runs): claims whose answer it never got (a connection lost during the commit), or whose
    job it dropped before starting it. They never ran, so no attempt is used up. Returns
    (id, queue) of each job put back.
    """
    with transaction(engine) as conn:
        cutoff = utcnow() - dt.timedelta(seconds=older_than)
        rows = conn.execute(
            sa.select(jobs.c.id, jobs.c.lease, jobs.c.queue, jobs.c.concurrency_key).where(
                jobs.c.state == State.RUNNING, jobs.c.locked_by == worker, jobs.c.locked_at < cutoff
            )
        ).all()
    released = []
    for row in rows:
        if row.id not in known and _release(engine, row.id, row.lease, row.concurrency_key):
            released.append((row.id, row.queue))
    return released


@retry_fenced
def _release(engine: Engine, job_id: int, lease: int, key: str | None) -> bool:
    with transaction(engine) as conn:
        now = utcnow()
        moved = _move(
            conn,
            job_id,
            State.QUEUED,
            {State.RUNNING},
            {Guard.LEASE: lease},
            attempts=ONE_LESS,
            run_at=now,
            heartbeat_at=None,
            updated_at=now,
        )
        if moved:
            concurrency.free_slot(conn, key)
        return moved


# --- the sweeper --------------------------------------------------------------------------
#
# The sweeper reads its candidates without locking them (a plain read at READ COMMITTED) and
# moves each through a guarded UPDATE by id: a row that changed since the read (claimed,
# cancelled, heartbeated) fails its guard and stays as it is. Nothing it does waits for a lock
# held by a worker's transaction while holding one of its own, except in primary key order.


@retry_conflicts
def promote_due(engine: Engine, limit: int = 500) -> list[tuple[int, str]]:
    """Queue the scheduled and retrying jobs whose run_at has come; return (id, queue) of each
    job that moved. A job that a client cancelled or edited (to a later run_at) between the
    read and the UPDATE stays as it is."""
    with transaction(engine) as conn:
        now = utcnow()
        due = conn.execute(
            sa.select(jobs.c.id, jobs.c.queue)
            .where(jobs.c.state.in_([State.SCHEDULED, State.RETRYING]), jobs.c.run_at <= now)
            .order_by(jobs.c.run_at)
            .limit(limit)
        ).all()
        if not due:
            return []
        ids = [row.id for row in due]
        moved = _move_all(
            conn,
            ids,
            State.QUEUED,
            {State.SCHEDULED, State.RETRYING},
            jobs.c.run_at <= now,  # an edit since the read may have moved it later
            updated_at=now,
        )
        if moved == len(ids):
            return [(row.id, row.queue) for row in due]
        rows = conn.execute(  # this transaction's own writes: which moved, to which queue
            sa.select(jobs.c.id, jobs.c.queue).where(
                jobs.c.id.in_(ids), jobs.c.state == State.QUEUED, jobs.c.updated_at == now
            )
        ).all()
        return [(row.id, row.queue) for row in rows]


@dataclass(frozen=True)
class LostAttempt:
    job_id: int
    queue: str
    worker: str | None
    state: State
    #: the attempt's end as its worker saw it (see `KnownEnd`); None: `worker lost`
    known: Outcome | None = None
    #: its concurrency key, whose slot it freed
    concurrency_key: str | None = None


@dataclass(frozen=True)
class KnownEnd:
    """How an attempt ended, known to its worker but not yet stored (the database was away):
    kept where the sweeper can read it, so that it records the truth, not `worker lost`."""

    outcome: Outcome
    output: OutputSnapshot

    def encode(self) -> bytes:
        o = self.outcome
        head = [o.succeeded, o.cancelled, o.exit_code, o.error, self.output.offset, o.reason]
        head.append(o.signal)
        return json.dumps(head).encode() + b"\n" + self.output.data

    @classmethod
    def decode(cls, data: bytes) -> KnownEnd:
        head, _, output = data.partition(b"\n")
        succeeded, cancelled, exit_code, error, offset, reason, signal = json.loads(head)
        outcome = Outcome(succeeded, cancelled, exit_code, error, EndReason(reason), signal)
        return cls(outcome, OutputSnapshot(output, offset))


#: looks up the KnownEnd of a job's attempt with this lease, if its worker left one
KnownEnds = Callable[[int, int], KnownEnd | None]


_LOST_COLUMNS = (
    jobs.c.id,
    jobs.c.queue,
    jobs.c.lease,
    jobs.c.attempts,
    jobs.c.max_retries,
    jobs.c.locked_by,
    jobs.c.concurrency_key,
    jobs.c.callback_url,
)


def mark_lost(
    engine: Engine,
    stale_after: float,
    policy: RetryPolicy,
    limit: int = 100,
    known_end: KnownEnds | None = None,
    retention: Retention | None = None,
    callback_url: str | None = None,
) -> list[LostAttempt]:
    """End the running attempts whose worker has sent no heartbeat for `stale_after` seconds
    (by the database's clock): with the end their worker left behind (`known_end`) if any,
    else `worker lost`; then retried if the job's retries allow it, else failed."""
    with transaction(engine) as conn:
        stale_before = database_time(conn) - dt.timedelta(seconds=stale_after)
        stale = conn.execute(
            sa.select(*_LOST_COLUMNS)
            .where(jobs.c.state == State.RUNNING, jobs.c.heartbeat_at < stale_before)
            .order_by(jobs.c.id)
            .limit(limit)
        ).all()
    guards = {Guard.STALE: stale_before}
    return _end_lost(engine, stale, policy, known_end, guards, retention, callback_url)


def mark_worker_lost(
    engine: Engine,
    worker: str,
    policy: RetryPolicy,
    known_end: KnownEnds | None = None,
    retention: Retention | None = None,
    callback_url: str | None = None,
) -> list[LostAttempt]:
    """End every running attempt of a worker known to be gone (its presence expired, or its
    process is dead on this machine), as `mark_lost` ends a stale one."""
    with transaction(engine) as conn:
        running = conn.execute(
            sa.select(*_LOST_COLUMNS)
            .where(jobs.c.state == State.RUNNING, jobs.c.locked_by == worker)
            .order_by(jobs.c.id)
        ).all()
    guards = {Guard.LOCKED_BY: worker}
    return _end_lost(engine, running, policy, known_end, guards, retention, callback_url)


def _end_lost(
    engine: Engine,
    rows: Sequence[Any],
    policy: RetryPolicy,
    known_end: KnownEnds | None,
    guards: Mapping[Guard, Any],
    retention: Retention | None,
    callback_url: str | None,
) -> list[LostAttempt]:
    lost = []
    for row in rows:
        known = known_end(row.id, row.lease) if known_end is not None else None
        fence = {Guard.LEASE: row.lease, **guards}
        urls = callbacks.urls_for(row.callback_url, callback_url)
        state = _end_lost_attempt(engine, row, fence, policy, known, retention, urls)
        if state is not None:
            outcome = known.outcome if known is not None else None
            lost.append(
                LostAttempt(row.id, row.queue, row.locked_by, state, outcome, row.concurrency_key)
            )
    return lost


@retry_fenced
def _end_lost_attempt(
    engine: Engine,
    row: Any,
    fence: Mapping[Guard, Any],
    policy: RetryPolicy,
    known: KnownEnd | None,
    retention: Retention | None,
    urls: Sequence[str],
) -> State | None:
    values: dict[str, Any] = {"heartbeat_at": None}
    outcome = WORKER_LOST
    if known is not None:
        outcome = known.outcome
        values.update(
            output=known.output.data,
            output_offset=known.output.offset,
            output_bytes=known.output.total,
        )
    with transaction(engine) as conn:
        return _end_attempt(
            conn,
            row.id,
            row.attempts,
            row.max_retries,
            fence,
            outcome,
            policy,
            utcnow(),
            values,
            retention,
            row.concurrency_key,
            urls,
        )


def release_held(engine: Engine) -> int:
    """The sweeper's safety net: release held jobs of every key that has room now (a limit
    raised by an edit, a slot freed while the job was being held). Returns how many."""
    with transaction(engine) as conn:
        keys = concurrency.held_keys(conn)
    return sum(_release_held(engine, key) for key in keys)


@retry_conflicts
def _release_held(engine: Engine, key: str) -> int:
    with transaction(engine) as conn:
        concurrency.lock(conn, concurrency.key_lock(key))
        return concurrency.release(conn, key, count=10)


def purge_finished(engine: Engine, retention: Retention, batch: int = 500) -> int:
    """Delete a batch of final jobs (and their output) of each outcome whose retention is
    over; return how many. Short transactions: call it again until it returns 0."""
    by_age: dict[float, list[State]] = {}
    for state in sorted(FINAL):
        by_age.setdefault(retention.of(state), []).append(state)
    return sum(_purge(engine, states, seconds, batch) for seconds, states in sorted(by_age.items()))


@retry_conflicts
def _purge(engine: Engine, states: list[State], older_than: float, batch: int) -> int:
    """One batch of the jobs in `states` finished more than `older_than` seconds ago."""
    with transaction(engine) as conn:
        cutoff = utcnow() - dt.timedelta(seconds=older_than)
        ids = (
            conn.execute(
                sa.select(jobs.c.id)
                .where(jobs.c.finished_at < cutoff, jobs.c.state.in_(states))
                .order_by(jobs.c.finished_at)
                .limit(batch)
            )
            .scalars()
            .all()
        )
        if not ids:
            return 0
        deleted = conn.execute(
            jobs.delete().where(
                jobs.c.id.in_(sorted(ids)),
                jobs.c.state.in_(states),
                jobs.c.finished_at < cutoff,
            )
        )
        return deleted.rowcount
