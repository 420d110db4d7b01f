"""Many processes claim jobs of a few keys at the same instants: never more than a key's limit
run at once (by a ledger of every start and end), every job runs once, and jobs without a key
keep running beside full keys (API.md section 6)."""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from service import jobs
from service.config import Settings
from service.web.schemas import parse_create
from tests.races import claimer, most_at_once
from tests.support import PROCESS_DEADLINE

LIMITS = {"one": 1, "two": 2, "three": 3}
PROCESSES = 6
JOBS_PER_KEY = 24
PLAIN_JOBS = 24


def test_racing_claimers_never_exceed_a_keys_limit(
    engine: sa.Engine, database_url: str, clean_db: None, tmp_path: Path
) -> None:
    settings = Settings()
    specs = []
    for i in range(JOBS_PER_KEY):
        for key, limit in LIMITS.items():
            fields = {"command": "true", "queue": "race", "priority": i % 3}
            specs.append(
                parse_create(
                    fields | {"concurrency_key": key, "concurrency_limit": limit}, settings
                )
            )
        if i < PLAIN_JOBS:
            specs.append(
                parse_create({"command": "true", "queue": "race", "priority": 5}, settings)
            )
    created = jobs.create_many(engine, specs)
    ledger_path = tmp_path / "ledger.jsonl"
    until = time.monotonic() + PROCESS_DEADLINE
    context = multiprocessing.get_context("spawn")
    claimers = [
        context.Process(
            target=claimer,
            args=(database_url, "race", f"racer-{n}", str(ledger_path), 0.01, until),
        )
        for n in range(PROCESSES)
    ]
    for process in claimers:
        process.start()
    for process in claimers:
        process.join(PROCESS_DEADLINE + 10)
        assert process.exitcode == 0
    ledger = [json.loads(line) for line in ledger_path.read_text().splitlines()]
    starts = Counter(entry[2] for entry in ledger if entry[1] == 1)
    assert sorted(starts) == sorted(job.id for job in created)  # every job ran
    assert set(starts.values()) == {1}  # and once
    most = most_at_once(ledger)
    for key, limit in LIMITS.items():
        assert most[key] <= limit, (key, most[key])
    # the race was a race: keys with room did run side by side, and so did jobs without one
    assert most["three"] >= 2
    assert most[None] >= 2
    with engine.begin() as conn:
        left = conn.execute(sa.text("SELECT COUNT(*) FROM jobs WHERE state <> 'succeeded'"))
        assert left.scalar_one() == 0
    print(f"ledger: {len(ledger)} events, most at once {most}, limits {LIMITS}")
