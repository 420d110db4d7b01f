"""Figure 6b, a full concurrency key with 10,000 waiting jobs must not slow other claims.

In its own database (`jobrunner_bench_keys`, dropped at the end), straight against
`service.jobs.claim_next` (the worker's code): the claim latency of jobs of another queue
(`ci`), and of jobs without a key in the key's own queue (`deploy`), first with no keyed job,
then beside `--key-jobs` (10,000) waiting jobs of one key whose only slot is taken. The first
claim in `deploy` after they arrive holds them (in batches of service.concurrency.HOLD_BATCH);
from then on they sit apart in the claim index. Each claim is followed by the finish of the
job it took, as a worker's would, outside the timing.

    .venv/bin/python -m bench.scale_keys [--key-jobs 10000] [--claims 500] [--reps 3]
"""

from __future__ import annotations

import argparse
import time

import sqlalchemy as sa

from bench.stack import database_url, drop_database
from bench.stats import Table, cell, percentile
from service import jobs
from service.config import Settings
from service.db import create_engine
from service.jobs import Outcome, OutputSnapshot
from service.migrate import apply_migrations
from service.states import RetryPolicy
from service.web.schemas import parse_create

DATABASE = "jobrunner_bench_keys"
POLICY = RetryPolicy(base=1, cap=1)
OK = Outcome(succeeded=True, exit_code=0)


def _create(engine: sa.Engine, count: int, **fields: object) -> None:
    spec = parse_create({"command": "true", **fields}, Settings())
    for start in range(0, count, 1000):
        jobs.create_many(engine, [spec] * min(1000, count - start))


def _claims(engine: sa.Engine, queue: str, count: int) -> list[float]:
    """Claim `count` jobs of `queue` one at a time; ms per claim (the finish not timed)."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        job = jobs.claim_next(engine, queue, "bench:keys")
        times.append((time.perf_counter() - t0) * 1000)
        if job is None:
            raise RuntimeError(f"queue {queue} ran dry: give fewer --claims")
        jobs.finish(engine, job, OK, OutputSnapshot(b"", 0), POLICY)
    return times


def measure(key_jobs: int, claims: int, reps: int) -> Table:
    url = database_url(DATABASE)
    table = Table(
        f"6b. Claim latency beside one full concurrency key with {key_jobs} waiting jobs "
        f"({claims} claims per case; ms; median [min-max] over {reps} reps)",
        ["case", "p50", "p99", "max"],
    )
    rows: dict[str, list[list[float]]] = {}
    first_claims: list[float] = []
    for _ in range(reps):
        drop_database(DATABASE)
        apply_migrations(url)
        engine = create_engine(url, pool_size=2, max_overflow=0)
        try:
            _create(engine, claims * 2, queue="ci")
            _create(engine, claims * 2, queue="deploy", priority=5)
            rows.setdefault("other queue (ci), no keyed jobs", []).append(
                _claims(engine, "ci", claims)
            )
            rows.setdefault("same queue (deploy), no keyed jobs", []).append(
                _claims(engine, "deploy", claims)
            )
            _create(engine, 1, queue="deploy", concurrency_key="svc")
            holder = jobs.claim_next(engine, "deploy", "bench:keys")  # takes the key's slot
            assert holder is not None and holder.concurrency_key == "svc"
            # the waiting jobs come before the plain ones in priority: the claim must pass them
            _create(engine, key_jobs, queue="deploy", concurrency_key="svc", priority=0)
            rows.setdefault(f"other queue (ci), {key_jobs} held beside", []).append(
                _claims(engine, "ci", claims)
            )
            t0 = time.perf_counter()
            first = jobs.claim_next(engine, "deploy", "bench:keys")
            first_claims.append((time.perf_counter() - t0) * 1000)
            assert first is not None and first.concurrency_key is None
            jobs.finish(engine, first, OK, OutputSnapshot(b"", 0), POLICY)
            rows.setdefault(f"same queue (deploy), {key_jobs} held ahead", []).append(
                _claims(engine, "deploy", claims - 1)
            )
            with engine.begin() as conn:
                held = conn.execute(sa.text("SELECT COUNT(*) FROM jobs WHERE held = 1"))
                if held.scalar_one() != key_jobs:
                    raise RuntimeError("the key's waiting jobs were not all held")
        finally:
            engine.dispose()
    for name, runs in rows.items():
        table.add(
            name,
            cell([percentile(r, 50) for r in runs], 2),
            cell([percentile(r, 99) for r in runs], 2),
            cell([max(r) for r in runs], 2),
        )
    table.add(
        f"first claim in deploy after {key_jobs} arrive (holds them)",
        cell(first_claims, 1),
        "-",
        "-",
    )
    table.notes.append(
        "every claim takes a job without a key; the key's jobs never start (its slot is "
        "taken) and, once held, are passed over by the claim index (held after state)"
    )
    drop_database(DATABASE)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key-jobs", type=int, default=10_000)
    parser.add_argument("--claims", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(measure(args.key_jobs, args.claims, args.reps).render())


if __name__ == "__main__":
    main()
