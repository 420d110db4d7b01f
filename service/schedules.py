"""Schedules (API.md section 7): a job template, and when to create its next job.

A tick is taken by one guarded UPDATE: `next_run_at` moves from the tick's time to the next
one only where it still holds the tick's time, and the job is inserted in that transaction.
However many schedulers run (every worker process's sweeper, `jobrunner dev`), each tick
creates at most one job; the rest find the guard failed. A tick missed while no scheduler
ran creates one job when one is back: the next `next_run_at` is the first tick after now,
not the one after the missed tick.

Times: `cron` is read in the schedule's IANA time zone, with daylight-saving transitions as
cron has them (cronsim: a time skipped by the clock moving forward runs once right after the
jump, a time that occurs twice runs once); `every` is in seconds of real time, its first tick
`every` seconds after the schedule is created or enabled. Stored times are naive UTC.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa
from cronsim import CronSim, CronSimError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from service import jobs, queries
from service.db import retry_conflicts, schedules, transaction, utcnow
from service.errors import Conflict, NotFound
from service.jobs import JobSpec
from service.queries import Job
from service.states import FINAL

OVERLAPS = ("skip", "allow")
#: the longest `every`: a year of seconds
MAX_EVERY = 366 * 24 * 3600
#: the job fields a template keeps (a schedule's jobs are due at their tick: no run_at)
TEMPLATE_FIELDS = (
    "command",
    "argv",
    "queue",
    "priority",
    "timeout",
    "max_retries",
    "env",
    "concurrency_key",
    "concurrency_limit",
    "callback_url",
)


def check_cron(expression: str) -> str:
    """The expression if it is 5 cron fields cronsim can read; ValueError (the message)."""
    if len(expression.split()) != 5:
        raise ValueError("must have 5 fields: minute hour day-of-month month day-of-week")
    try:
        CronSim(expression, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    except CronSimError as exc:
        raise ValueError(f"is not a valid cron expression: {exc}") from None
    return expression


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone `name`; ValueError when there is none of that name."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError("is not a known IANA time zone (such as UTC or Europe/Berlin)") from None


@dataclass(frozen=True)
class Timing:
    cron: str | None
    every: int | None
    timezone: str

    def first(self, now: dt.datetime) -> dt.datetime:
        """The first tick of a schedule created or enabled at `now`."""
        if self.every is not None:
            return now + dt.timedelta(seconds=self.every)
        return self._next_cron(now)

    def after(self, tick: dt.datetime, now: dt.datetime) -> dt.datetime:
        """The tick that follows `tick`, taken at `now`: the first after now (a missed tick
        is one tick, not a burst). `every` keeps its phase."""
        if self.every is not None:
            step = dt.timedelta(seconds=self.every)
            missed = max(0, int((now - tick) / step))
            following = tick + step * (missed + 1)
            return following if following > now else following + step
        return self._next_cron(max(tick, now))

    def _next_cron(self, after: dt.datetime) -> dt.datetime:
        assert self.cron is not None
        local = after.replace(tzinfo=dt.UTC).astimezone(zone(self.timezone))
        following: dt.datetime = next(iter(CronSim(self.cron, local)))
        return following.astimezone(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Schedule:
    id: int
    name: str
    cron: str | None
    every: int | None
    timezone: str
    job: dict[str, Any]
    enabled: bool
    overlap: str
    next_run_at: dt.datetime | None
    last_run_at: dt.datetime | None
    last_job_id: int | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def timing(self) -> Timing:
        return Timing(self.cron, self.every, self.timezone)


_COLUMNS = tuple(schedules.c[f.name] for f in fields(Schedule))


def _schedule(row: Any) -> Schedule:
    values = dict(row._mapping)
    values["enabled"] = bool(values["enabled"])
    return Schedule(**values)


def template_of(spec: JobSpec) -> dict[str, Any]:
    """What a schedule stores of a validated job (service.web validates it as POST /jobs)."""
    return {name: getattr(spec, name) for name in TEMPLATE_FIELDS}


def spec_of(template: Mapping[str, Any], schedule_id: int) -> JobSpec:
    values: dict[str, Any] = {name: template.get(name) for name in TEMPLATE_FIELDS}
    return JobSpec(run_at=None, schedule_id=schedule_id, **values)


def get(conn: Connection, schedule_id: int) -> Schedule | None:
    row = conn.execute(sa.select(*_COLUMNS).where(schedules.c.id == schedule_id)).first()
    return _schedule(row) if row is not None else None


def require(conn: Connection, schedule_id: int) -> Schedule:
    found = get(conn, schedule_id)
    if found is None:
        raise NotFound(f"no schedule {schedule_id}")
    return found


def list_all(conn: Connection) -> list[Schedule]:
    rows = conn.execute(sa.select(*_COLUMNS).order_by(schedules.c.name, schedules.c.id))
    return [_schedule(row) for row in rows]


@dataclass(frozen=True)
class NewSchedule:
    """A validated schedule to create (service.web.schedule_bodies validates requests)."""

    name: str
    timing: Timing
    job: dict[str, Any]
    enabled: bool = True
    overlap: str = "skip"


def _duplicate(name: str) -> Conflict:
    return Conflict(f"a schedule named {name!r} exists already")


@retry_conflicts
def create(engine: Engine, new: NewSchedule) -> Schedule:
    now = utcnow()
    values = {
        "name": new.name,
        "cron": new.timing.cron,
        "every": new.timing.every,
        "timezone": new.timing.timezone,
        "job": new.job,
        "enabled": int(new.enabled),
        "overlap": new.overlap,
        "next_run_at": new.timing.first(now) if new.enabled else None,
        "last_run_at": None,
        "last_job_id": None,
        "created_at": now,
        "updated_at": now,
    }
    try:
        with transaction(engine) as conn:
            key = conn.execute(schedules.insert().values(values)).inserted_primary_key
            assert key is not None
            return require(conn, int(key[0]))
    except IntegrityError:
        raise _duplicate(new.name) from None


@retry_conflicts
def update(engine: Engine, schedule_id: int, changes: Mapping[str, Any]) -> Schedule:
    """Change some of name, cron/every, timezone, job, enabled, overlap (validated). A change
    of timing, or an enable, starts the ticks afresh from now; a disable stops them."""
    try:
        with transaction(engine) as conn:
            current = require(conn, schedule_id)
            now = utcnow()
            values: dict[str, Any] = dict(changes, updated_at=now)
            if "enabled" in values:
                values["enabled"] = int(values["enabled"])
            # a change of cron or every gives both (the other None): service.web
            timing = Timing(
                changes.get("cron", current.cron),
                changes.get("every", current.every),
                changes.get("timezone", current.timezone),
            )
            values["cron"], values["every"] = timing.cron, timing.every
            enabled = bool(changes.get("enabled", current.enabled))
            retimed = timing != current.timing or (enabled and not current.enabled)
            if not enabled:
                values["next_run_at"] = None
            elif retimed or current.next_run_at is None:
                values["next_run_at"] = timing.first(now)
            conn.execute(schedules.update().where(schedules.c.id == schedule_id).values(values))
            return require(conn, schedule_id)
    except IntegrityError:
        raise _duplicate(str(changes.get("name"))) from None


@retry_conflicts
def delete(engine: Engine, schedule_id: int) -> None:
    """Delete a schedule; the jobs it created stay (their schedule_id still says whose)."""
    with transaction(engine) as conn:
        if conn.execute(schedules.delete().where(schedules.c.id == schedule_id)).rowcount != 1:
            raise NotFound(f"no schedule {schedule_id}")


def _make_job(conn: Connection, schedule: Schedule) -> Job:
    now = utcnow()  # the job's own times are the clock's, whatever tick it is for
    job = jobs.create_in(conn, spec_of(schedule.job, schedule.id), now)
    conn.execute(
        schedules.update()
        .where(schedules.c.id == schedule.id)
        .values(last_job_id=job.id, last_run_at=now, updated_at=now)
    )
    return job


@retry_conflicts
def trigger(engine: Engine, schedule_id: int) -> Job:
    """Create the schedule's job now, outside its ticks, enabled or not, whatever `overlap`."""
    with transaction(engine) as conn:
        return _make_job(conn, require(conn, schedule_id))


@dataclass(frozen=True)
class Tick:
    """A tick taken: the schedule, the tick's time, and its job (None: skipped, overlap)."""

    schedule_id: int
    at: dt.datetime
    job: Job | None


def due(conn: Connection, now: dt.datetime, limit: int = 100) -> list[tuple[int, dt.datetime]]:
    rows = conn.execute(
        sa.select(schedules.c.id, schedules.c.next_run_at)
        .where(schedules.c.enabled == 1, schedules.c.next_run_at <= now)
        .order_by(schedules.c.next_run_at)
        .limit(limit)
    ).all()
    return [(row.id, row.next_run_at) for row in rows]


def tick(engine: Engine, now: dt.datetime | None = None) -> list[Tick]:
    """Take every due tick (see the module docstring); returns the ticks this call took."""
    now = now or utcnow()
    with transaction(engine) as conn:
        found = due(conn, now)
    taken = []
    for schedule_id, at in found:
        result = _take(engine, schedule_id, at, now)
        if result is not None:
            taken.append(result)
    return taken


@retry_conflicts
def _take(engine: Engine, schedule_id: int, at: dt.datetime, now: dt.datetime) -> Tick | None:
    with transaction(engine) as conn:
        schedule = get(conn, schedule_id)
        if schedule is None or schedule.next_run_at != at or not schedule.enabled:
            return None
        following = schedule.timing.after(at, now)
        moved = conn.execute(
            schedules.update()
            .where(
                schedules.c.id == schedule_id,
                schedules.c.next_run_at == at,
                schedules.c.enabled == 1,
            )
            .values(next_run_at=following, updated_at=now)
        ).rowcount
        if moved != 1:
            return None  # another scheduler took this tick
        if schedule.overlap == "skip" and _last_is_live(conn, schedule):
            return Tick(schedule_id, at, None)
        return Tick(schedule_id, at, _make_job(conn, schedule))


def _last_is_live(conn: Connection, schedule: Schedule) -> bool:
    if schedule.last_job_id is None:
        return False
    last = queries.get(conn, schedule.last_job_id)
    return last is not None and last.state not in FINAL
