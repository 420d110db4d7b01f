"""The claimers of the multi-process race tests (tests/integration/test_key_race.py): each is
a process of its own (spawned, with its own engine), claiming with the worker's code and
writing every start and end to a ledger.

A start is written after the claim's commit and an end before the finish's commit, so each
interval in the ledger lies within the time the database had the job `running`: intervals
that overlap beyond a key's limit in the ledger overlapped in the database too. Times are
CLOCK_MONOTONIC, one clock for every process of the machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import sqlalchemy as sa

from service import jobs
from service.db import create_engine
from service.jobs import Outcome, OutputSnapshot
from service.states import RetryPolicy

POLICY = RetryPolicy(base=0.001, cap=0.001)


def claimer(url: str, queue: str, name: str, ledger: str, hold_s: float, until: float) -> None:
    engine = create_engine(url, pool_size=2, max_overflow=0)
    idle_since: float | None = None
    with Path(ledger).open("a") as out:
        while time.monotonic() < until:
            job = jobs.claim_next(engine, queue, name)
            if job is None:
                with engine.begin() as conn:
                    left = conn.execute(
                        sa.text("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")
                    ).scalar_one()
                if left == 0:
                    break
                idle_since = idle_since or time.monotonic()
                time.sleep(0.002)  # others run the key's jobs: claim again in a moment
                continue
            idle_since = None
            out.write(json.dumps([time.monotonic_ns(), 1, job.id, job.concurrency_key]) + "\n")
            out.flush()
            time.sleep(hold_s)  # the job "runs"
            out.write(json.dumps([time.monotonic_ns(), -1, job.id, job.concurrency_key]) + "\n")
            out.flush()
            ok = Outcome(succeeded=True, exit_code=0)
            assert jobs.finish(engine, job, ok, OutputSnapshot(b"", 0), POLICY) is not None
    engine.dispose()


def most_at_once(ledger: list[list[object]]) -> dict[str | None, int]:
    """The most jobs of each key that ran at once, by the ledger."""
    running: dict[str | None, int] = {}
    most: dict[str | None, int] = {}
    for _, delta, _, key in sorted(ledger, key=lambda e: (e[0], e[1])):  # ends first on a tie
        k = key if isinstance(key, str) else None
        running[k] = running.get(k, 0) + int(delta)  # type: ignore[call-overload]
        most[k] = max(most.get(k, 0), running[k])
    return most


def ticker(url: str, name: str, ledger: str, until: float) -> None:
    """A scheduler of its own: takes due ticks as fast as it can until `until`, writing each
    tick it took (schedule, tick time, job) to the ledger."""
    from service import schedules

    engine = create_engine(url, pool_size=2, max_overflow=0)
    with Path(ledger).open("a") as out:
        while time.monotonic() < until:
            for taken in schedules.tick(engine):
                job_id = taken.job.id if taken.job is not None else None
                out.write(json.dumps([name, taken.schedule_id, taken.at.isoformat(), job_id]))
                out.write("\n")
                out.flush()
            time.sleep(0.005)
    engine.dispose()
