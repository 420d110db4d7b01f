"""Concurrency keys and queue caps in the claim, straight against MariaDB (API.md section 6):
full keys hold their jobs without blocking the queue, and every way an attempt leaves
`running` frees its slot exactly once."""

from __future__ import annotations

import sqlalchemy as sa

from service import jobs
from service.config import Settings
from service.jobs import Outcome, OutputSnapshot
from service.states import RetryPolicy, State
from service.web.schemas import parse_create
from tests.support import age

SETTINGS = Settings()
NOTHING = OutputSnapshot(b"", 0)
POLICY = RetryPolicy(base=0.001, cap=0.001)
OK = Outcome(succeeded=True, exit_code=0)
FAILED = Outcome(succeeded=False, exit_code=1, error="exit status 1")


def create(engine: sa.Engine, **fields) -> int:  # type: ignore[no-untyped-def]
    job, created = jobs.create(engine, parse_create({"command": "true", **fields}, SETTINGS))
    assert created
    return job.id


def running_of(engine: sa.Engine, key: str) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT COUNT(*) FROM jobs WHERE concurrency_key = :k AND state = 'running'"
                ),
                {"k": key},
            ).scalar_one()
        )


def claim(engine: sa.Engine, queue: str, cap: int | None = None) -> jobs.ClaimedJob | None:
    return jobs.claim_next(engine, queue, "w", cap)


def test_a_full_key_waits_without_holding_up_its_queue(engine: sa.Engine, clean_db: None) -> None:
    first = create(engine, queue="ck", concurrency_key="deploy", priority=0)
    second = create(engine, queue="ck", concurrency_key="deploy", priority=5)
    better = create(engine, queue="ck", concurrency_key="deploy", priority=1)
    plain = create(engine, queue="ck", priority=9)  # worse than all: still runs now
    running = claim(engine, "ck")
    assert running is not None and running.id == first
    other = claim(engine, "ck")
    assert other is not None and other.id == plain  # the key's jobs were passed over
    assert claim(engine, "ck") is None  # nothing else may start
    assert running_of(engine, "deploy") == 1
    assert jobs.finish(engine, running, OK, NOTHING, POLICY) == State.SUCCEEDED
    following = claim(engine, "ck")
    assert following is not None and following.id == better  # priority order within the key
    assert claim(engine, "ck") is None
    jobs.finish(engine, following, OK, NOTHING, POLICY)
    last = claim(engine, "ck")
    assert last is not None and last.id == second


def test_a_limit_of_two(engine: sa.Engine, clean_db: None) -> None:
    ids = [
        create(engine, queue="ck2", concurrency_key="report", concurrency_limit=2) for _ in range(4)
    ]
    a, b = claim(engine, "ck2"), claim(engine, "ck2")
    assert a is not None and b is not None and {a.id, b.id} == set(ids[:2])
    assert claim(engine, "ck2") is None
    jobs.finish(engine, a, FAILED, NOTHING, POLICY)
    c = claim(engine, "ck2")
    assert c is not None and c.id == ids[2]
    assert running_of(engine, "report") == 2


def test_a_key_spans_queues(engine: sa.Engine, clean_db: None) -> None:
    create(engine, queue="ka", concurrency_key="shared")
    later = create(engine, queue="kb", concurrency_key="shared")
    first = claim(engine, "ka")
    assert first is not None
    assert claim(engine, "kb") is None
    jobs.finish(engine, first, OK, NOTHING, POLICY)
    second = claim(engine, "kb")
    assert second is not None and second.id == later


def test_hand_back_retry_lost_and_delete_each_free_the_slot_once(
    engine: sa.Engine, clean_db: None
) -> None:
    job_id = create(engine, queue="cs", concurrency_key="slot", max_retries=3)
    waiting = create(engine, queue="cs", concurrency_key="slot")
    # a hand-back frees the slot (the job goes to the back: run_at now)
    attempt = claim(engine, "cs")
    assert attempt is not None and attempt.id == job_id
    assert claim(engine, "cs") is None
    assert jobs.hand_back(engine, attempt)
    assert not jobs.hand_back(engine, attempt)  # a second hand-back changes nothing
    other = claim(engine, "cs")
    assert other is not None and other.id == waiting
    assert claim(engine, "cs") is None
    # the worker of `other` is lost: the sweeper frees the slot, once
    age(engine, "heartbeat_at", 60, other.id)
    lost = jobs.mark_lost(engine, 30, POLICY)
    assert [item.job_id for item in lost] == [waiting]
    assert jobs.mark_lost(engine, 30, POLICY) == []
    assert jobs.finish(engine, other, OK, NOTHING, POLICY) is None  # its late end: nothing
    attempt = claim(engine, "cs")
    assert attempt is not None and attempt.id == job_id
    assert running_of(engine, "slot") == 1
    # a failed attempt with retries left: retrying frees the slot
    third = create(engine, queue="cs", concurrency_key="slot")
    assert claim(engine, "cs") is None
    assert jobs.finish(engine, attempt, FAILED, NOTHING, POLICY) == State.RETRYING
    assert jobs.finish(engine, attempt, FAILED, NOTHING, POLICY) is None  # not twice
    following = claim(engine, "cs")
    assert following is not None and following.id == third
    jobs.promote_due(engine)  # the retry is due at once: it waits for the slot
    assert claim(engine, "cs") is None
    # deleting a running job frees its slot too
    assert jobs.delete(engine, third) == State.RUNNING
    assert running_of(engine, "slot") == 0
    last = claim(engine, "cs")
    assert last is not None and last.id == job_id and last.attempt == 2
    assert running_of(engine, "slot") == 1


def test_held_jobs_are_released_by_the_sweeper_when_the_limit_is_raised(
    engine: sa.Engine, clean_db: None
) -> None:
    create(engine, queue="cr", concurrency_key="raise")
    waiting = create(engine, queue="cr", concurrency_key="raise")
    assert claim(engine, "cr") is not None
    assert claim(engine, "cr") is None  # held now
    with engine.begin() as conn:  # as if its limit had been raised behind the claim's back
        conn.execute(
            sa.text("UPDATE jobs SET concurrency_limit = 2 WHERE id = :id"), {"id": waiting}
        )
    assert claim(engine, "cr") is None  # still held
    assert jobs.release_held(engine) == 1
    second = claim(engine, "cr")
    assert second is not None and second.id == waiting


def test_an_edit_of_the_limit_lets_the_job_start(engine: sa.Engine, clean_db: None) -> None:
    create(engine, queue="ce", concurrency_key="edit")
    waiting = create(engine, queue="ce", concurrency_key="edit")
    assert claim(engine, "ce") is not None
    assert claim(engine, "ce") is None
    jobs.edit(engine, waiting, {"concurrency_limit": 2})
    second = claim(engine, "ce")
    assert second is not None and second.id == waiting


def test_a_queue_cap(engine: sa.Engine, clean_db: None) -> None:
    ids = [create(engine, queue="capped") for _ in range(3)]
    first = claim(engine, "capped", cap=1)
    assert first is not None and first.id == ids[0]
    assert claim(engine, "capped", cap=1) is None
    assert claim(engine, "capped", cap=2) is not None  # the cap is the setting's
    state, following = jobs.finish_and_claim(
        engine, first, OK, NOTHING, POLICY, jobs.NextClaim("capped", "w", 2)
    )
    assert state == State.SUCCEEDED and following is not None and following.id == ids[2]


def test_keys_and_a_cap_together(engine: sa.Engine, clean_db: None) -> None:
    a = create(engine, queue="both", concurrency_key="k1")
    b = create(engine, queue="both", concurrency_key="k1")
    c = create(engine, queue="both")
    first = claim(engine, "both", cap=2)
    assert first is not None and first.id == a
    second = claim(engine, "both", cap=2)
    assert second is not None and second.id == c
    assert claim(engine, "both", cap=2) is None
    state, following = jobs.finish_and_claim(
        engine, first, OK, NOTHING, POLICY, jobs.NextClaim("both", "w", 2)
    )
    assert state == State.SUCCEEDED and following is not None and following.id == b
