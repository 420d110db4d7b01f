"""Diagnostic: can `service.jobs.claim_next` find nothing while a committed queued job waits?

No Dramatiq and no HTTP: a producer thread creates jobs with `service.jobs.create` (the web's
code) and puts one "message" per committed job on a local queue; consumer threads take a
message each and call `claim_next` then `finish` (the worker's code), like the actor does.
Since every message is sent after its job's commit and each claim takes one job, a claim that
returns None while jobs wait means a wake-up was spent for nothing: in the real system that
job then waits for the sweeper's top-up (5 s). Deadlocks (1213) of a claim are counted and
the message put back, as Dramatiq's retry would (after >= 0.5 s there).

Uses its own database `jobrunner_bench_diag` (dropped at the end).

    .venv/bin/python -m bench.claim_race [--burst 2000] [--jobs 500] [--rate 100] [--threads 8]
"""

from __future__ import annotations

import argparse
import queue
import threading
import time

import sqlalchemy as sa

from bench.stack import database_url, drop_database
from service import jobs
from service.config import Settings
from service.db import create_engine
from service.jobs import Outcome, OutputSnapshot
from service.migrate import apply_migrations
from service.states import RetryPolicy
from service.web.schemas import parse_create

DATABASE = "jobrunner_bench_diag"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=2000, help="jobs created at once first")
    parser.add_argument("--jobs", type=int, default=500, help="jobs created at a steady rate")
    parser.add_argument("--rate", type=float, default=100.0, help="steady jobs/s")
    parser.add_argument("--threads", type=int, default=8, help="claiming threads (2 x 4)")
    args = parser.parse_args()
    url = database_url(DATABASE)
    drop_database(DATABASE)
    apply_migrations(url)
    web = create_engine(url, pool_size=20, max_overflow=10)
    worker = create_engine(url, pool_size=args.threads + 3, max_overflow=5)
    spec = parse_create({"command": "true"}, Settings())
    messages: queue.Queue[int | None] = queue.Queue()
    lock = threading.Lock()
    empty: list[tuple[int, int]] = []
    deadlocks: list[str] = []

    def consume(k: int) -> None:
        while (message := messages.get()) is not None:
            try:
                claimed = jobs.claim_next(worker, "default", f"diag:{k}")
            except sa.exc.OperationalError as exc:
                with lock:
                    deadlocks.append(str(exc.orig))
                messages.put(message)
                continue
            if claimed is None:
                with worker.connect() as conn:
                    waiting = conn.execute(
                        sa.text("SELECT COUNT(*) FROM jobs WHERE state = 'queued'")
                    ).scalar_one()
                with lock:
                    empty.append((message, waiting))
                continue
            jobs.finish(
                worker,
                claimed,
                Outcome(succeeded=True, exit_code=0),
                OutputSnapshot(b"", 0),
                RetryPolicy(base=10, cap=3600),
            )

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(args.threads)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(args.burst):
            messages.put(jobs.create(web, spec)[0].id)
        while messages.qsize():
            time.sleep(0.05)
        print(f"after a burst of {args.burst}: {len(empty)} empty claims")
        t0 = time.time()
        for i in range(args.jobs):
            time.sleep(max(0.0, t0 + i / args.rate - time.time()))
            messages.put(jobs.create(web, spec)[0].id)
        time.sleep(2)
    finally:
        for _ in threads:
            messages.put(None)
        for thread in threads:
            thread.join(timeout=60)
        with web.connect() as conn:
            stranded = conn.execute(
                sa.text("SELECT COUNT(*) FROM jobs WHERE state = 'queued'")
            ).scalar_one()
        web.dispose()
        worker.dispose()
        drop_database(DATABASE)
    print(
        f"{args.burst} + {args.jobs} jobs, {args.threads} threads: {len(empty)} claims found "
        f"nothing (message job id, queued rows just after: {empty[:10]}); {len(deadlocks)} "
        f"deadlocks; {stranded} jobs left queued with no message"
    )


if __name__ == "__main__":
    main()
