"""The claim and the fence, straight against MariaDB: races between workers, stale writes."""

from __future__ import annotations

import concurrent.futures
import threading

import sqlalchemy as sa

from service import jobs
from service.config import Settings
from service.jobs import Outcome, OutputSnapshot
from service.schemas import parse_create
from service.states import State

SETTINGS = Settings()
NOTHING = OutputSnapshot(b"", 0)


def create(engine: sa.Engine, **fields) -> int:  # type: ignore[no-untyped-def]
    job, created = jobs.create(engine, parse_create({"command": "true", **fields}, SETTINGS))
    assert created
    return job.id


def state_of(engine: sa.Engine, job_id: int) -> str:
    with engine.begin() as conn:
        return conn.execute(
            sa.text("SELECT state FROM jobs WHERE id = :id"), {"id": job_id}
        ).scalar()


def test_racing_claims_take_each_job_once(engine: sa.Engine, clean_db: None) -> None:
    ids = {create(engine, queue="race") for _ in range(30)}
    barrier = threading.Barrier(8)

    def claim_all(worker: int) -> list[int]:
        barrier.wait()
        claimed = []
        while (job := jobs.claim_next(engine, "race", f"w{worker}")) is not None:
            claimed.append(job.id)
        return claimed

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(claim_all, range(8)))
    everything = [job_id for claimed in results for job_id in claimed]
    assert sorted(everything) == sorted(ids)  # each job exactly once
    assert sum(1 for claimed in results if claimed) >= 2  # SKIP LOCKED let workers proceed


def test_claim_takes_the_best_job(engine: sa.Engine, clean_db: None) -> None:
    low = create(engine, queue="best", priority=5)
    high = create(engine, queue="best", priority=-3)
    tie_first = create(engine, queue="best", priority=0)
    tie_second = create(engine, queue="best", priority=0)
    order = [jobs.claim_next(engine, "best", "w").id for _ in range(4)]
    assert order == [high, tie_first, tie_second, low]
    assert jobs.claim_next(engine, "best", "w") is None


def test_a_stale_attempt_cannot_overwrite_a_newer_one(engine: sa.Engine, clean_db: None) -> None:
    job_id = create(engine, queue="fence", max_retries=5)
    first = jobs.claim_next(engine, "fence", "old-worker")
    assert first is not None
    assert jobs.hand_back(engine, first)  # e.g. the old worker was stopped
    second = jobs.claim_next(engine, "fence", "new-worker")
    assert second is not None and second.lease > first.lease
    # the old attempt comes back and tries to record its result
    stale = jobs.finish(engine, first, Outcome(succeeded=True, exit_code=0), NOTHING,
                        backoff=1, backoff_cap=1)  # fmt: skip
    assert stale is None
    assert not jobs.save_output(engine, first, OutputSnapshot(b"stale", 0))
    assert state_of(engine, job_id) == "running"
    assert jobs.heartbeat(engine, {job_id: first.lease}) == {job_id: "lost"}
    assert jobs.heartbeat(engine, {job_id: second.lease}) == {}
    done = jobs.finish(engine, second, Outcome(succeeded=True, exit_code=0), NOTHING,
                       backoff=1, backoff_cap=1)  # fmt: skip
    assert done == State.SUCCEEDED


def test_hand_back_does_not_count_the_attempt(engine: sa.Engine, clean_db: None) -> None:
    create(engine, queue="handback")
    first = jobs.claim_next(engine, "handback", "w")
    assert first is not None and first.attempt == 1
    jobs.hand_back(engine, first)
    again = jobs.claim_next(engine, "handback", "w")
    assert again is not None and again.attempt == 1


def test_a_cancel_requested_during_a_failure_is_not_retried(
    engine: sa.Engine, clean_db: None
) -> None:
    job_id = create(engine, queue="c", max_retries=3)
    claimed = jobs.claim_next(engine, "c", "w")
    assert claimed is not None
    assert jobs.cancel(engine, job_id).cancel_requested_at is not None
    assert jobs.heartbeat(engine, {job_id: claimed.lease}) == {job_id: "cancelled"}
    failed = Outcome(succeeded=False, exit_code=1, error="exit status 1")
    assert (
        jobs.finish(engine, claimed, failed, NOTHING, backoff=1, backoff_cap=1) == State.CANCELLED
    )


def test_a_deleted_job_stops_its_attempt(engine: sa.Engine, clean_db: None) -> None:
    job_id = create(engine, queue="d")
    claimed = jobs.claim_next(engine, "d", "w")
    assert claimed is not None
    assert jobs.delete(engine, job_id) == State.RUNNING
    assert jobs.heartbeat(engine, {job_id: claimed.lease}) == {job_id: "cancelled"}
    ok = Outcome(succeeded=True, exit_code=0)
    assert jobs.finish(engine, claimed, ok, NOTHING, backoff=1, backoff_cap=1) is None


def test_promote_due_queues_scheduled_and_retrying_jobs(engine: sa.Engine, clean_db: None) -> None:
    past = create(engine, queue="p", run_at="2001-01-01T00:00:00Z")
    future = create(engine, queue="p", run_at="2999-01-01T00:00:00Z")
    assert (state_of(engine, past), state_of(engine, future)) == ("queued", "scheduled")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET state = 'scheduled' WHERE id = :id"), {"id": past})
    assert jobs.promote_due(engine) == ["p"]
    assert (state_of(engine, past), state_of(engine, future)) == ("queued", "scheduled")
