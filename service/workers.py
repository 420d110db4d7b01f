"""The worker registry: which worker processes are alive, where, and serving which queues.

A table rather than keys in Redis with a time to live: a worker's presence and its attempts
then live in one place, under one clock (the database's, `db_now`) and one outage: a Redis
restart cannot make every worker look dead at once, and the sweeper that reads a worker's
last sign of life compares it with the same clock that wrote it, whatever the clocks of the
machines say. Renewing costs one UPDATE by primary key per worker process every few seconds.

A pid means something only on its machine and in its pid namespace: `boot` (the kernel's boot
id and the pid namespace) says where it is, and `started_ticks` (the process's start time in
/proc) tells the worker that had a pid from a process that reuses it.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service.db import database_time, db_now, jobs, transaction, utcnow, workers
from service.states import State


@dataclass(frozen=True)
class Identity:
    """A worker process as the registry knows it."""

    name: str  # host:pid (`locked_by` of the jobs it claims)
    host: str
    pid: int
    boot: str
    started_ticks: int
    #: the queues it serves; None: every queue
    queues: tuple[str, ...] | None


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    host: str
    pid: int
    queues: list[str] | None
    started_at: dt.datetime
    last_seen_at: dt.datetime
    running: list[int]


@dataclass(frozen=True)
class Registered:
    """A row of the registry: enough to tell whether its process is still there."""

    name: str
    pid: int
    boot: str
    started_ticks: int
    last_seen_at: dt.datetime


def machine() -> str:
    """This machine's boot and pid namespace: two processes with the same `machine()` can tell
    from /proc whether a pid of the other is alive."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = socket.gethostname()
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "pid:?"
    return f"{boot}/{namespace}"[:100]


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks after boot (/proc/PID/stat field 22); None if
    there is no such process (or it is a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def this_process(name: str, queues: Sequence[str] | None, machine_id: str = "") -> Identity:
    return Identity(
        name=name,
        host=socket.gethostname(),
        pid=os.getpid(),
        boot=machine_id[:100] or machine(),
        started_ticks=start_ticks(os.getpid()) or 0,
        queues=tuple(queues) if queues else None,
    )


def is_alive(row: Registered) -> bool:
    """Whether the process of a row of this machine still runs (the same process: a reused
    pid started later)."""
    return start_ticks(row.pid) == row.started_ticks


def register(engine: Engine, identity: Identity) -> None:
    """Enter this process in the registry (again, if a sweeper took it out)."""
    with transaction(engine) as conn:
        conn.execute(workers.delete().where(workers.c.name == identity.name))
        conn.execute(
            workers.insert().values(
                name=identity.name,
                host=identity.host,
                pid=identity.pid,
                boot=identity.boot,
                started_ticks=identity.started_ticks,
                queues=list(identity.queues) if identity.queues is not None else None,
                started_at=utcnow(),
                last_seen_at=db_now(),
            )
        )


RENEW = (
    workers.update().where(workers.c.name == sa.bindparam("worker")).values(last_seen_at=db_now())
)


def renew(engine: Engine, name: str) -> bool:
    """Say that this process is alive; False if its row is gone (a sweeper declared it lost)."""
    with transaction(engine) as conn:
        return conn.execute(RENEW, {"worker": name}).rowcount == 1


def deregister(engine: Engine, name: str) -> None:
    with transaction(engine) as conn:
        conn.execute(workers.delete().where(workers.c.name == name))


def remove_expired(engine: Engine, row: Registered) -> None:
    """Take out a worker declared lost, unless it renewed its presence since it was read."""
    with transaction(engine) as conn:
        conn.execute(
            workers.delete().where(
                workers.c.name == row.name, workers.c.last_seen_at == row.last_seen_at
            )
        )


def expired(engine: Engine, lease: float) -> tuple[dt.datetime, list[Registered]]:
    """The database's time now, and the workers not seen for `lease` seconds by it."""
    with transaction(engine) as conn:
        now = database_time(conn)
        rows = conn.execute(
            sa.select(*_REGISTERED).where(
                workers.c.last_seen_at < now - dt.timedelta(seconds=lease)
            )
        ).all()
    return now, [Registered(*row) for row in rows]


def on_machine(engine: Engine, boot: str) -> list[Registered]:
    """The registered workers of this machine (and pid namespace)."""
    with transaction(engine) as conn:
        rows = conn.execute(sa.select(*_REGISTERED).where(workers.c.boot == boot)).all()
    return [Registered(*row) for row in rows]


_REGISTERED = (
    workers.c.name,
    workers.c.pid,
    workers.c.boot,
    workers.c.started_ticks,
    workers.c.last_seen_at,
)


def live(engine: Engine, lease: float) -> list[WorkerInfo]:
    """The workers seen within `lease` seconds, by name, with the ids of the jobs they run."""
    with transaction(engine) as conn:
        now = database_time(conn)
        rows = conn.execute(
            sa.select(workers)
            .where(workers.c.last_seen_at >= now - dt.timedelta(seconds=lease))
            .order_by(workers.c.name)
        ).all()
        running: defaultdict[str, list[int]] = defaultdict(list)
        if rows:
            names = [row.name for row in rows]
            for job_id, locked_by in conn.execute(
                sa.select(jobs.c.id, jobs.c.locked_by)
                .where(jobs.c.state == State.RUNNING, jobs.c.locked_by.in_(names))
                .order_by(jobs.c.id)
            ):
                running[locked_by].append(job_id)
    return [
        WorkerInfo(
            name=row.name,
            host=row.host,
            pid=row.pid,
            queues=row.queues,
            started_at=row.started_at,
            last_seen_at=row.last_seen_at,
            running=running.get(row.name, []),
        )
        for row in rows
    ]


def count_live(engine: Engine, lease: float) -> int:
    with transaction(engine) as conn:
        now = database_time(conn)
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    workers.c.last_seen_at >= now - dt.timedelta(seconds=lease)
                )
            ).scalar_one()
        )
