"""The claim and the fence, straight against MariaDB: races between workers, stale writes."""

from __future__ import annotations

import concurrent.futures
import threading

import sqlalchemy as sa

from service import jobs
from service.config import Settings
from service.jobs import Outcome, OutputSnapshot
from service.states import Retention, RetryPolicy, State
from service.web.schemas import parse_create
from tests.support import age

SETTINGS = Settings()
NOTHING = OutputSnapshot(b"", 0)
POLICY = RetryPolicy(base=1, cap=1)


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
    if engine.dialect.name != "sqlite":  # SQLite runs one writer at a time: one may take all
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
    stale = jobs.finish(engine, first, Outcome(succeeded=True, exit_code=0), NOTHING, POLICY)
    assert stale is None
    assert not jobs.save_output(engine, first, OutputSnapshot(b"stale", 0))
    assert state_of(engine, job_id) == "running"
    assert jobs.heartbeat(engine, {job_id: first.lease}) == {job_id: "lost"}
    assert jobs.heartbeat(engine, {job_id: second.lease}) == {}
    done = jobs.finish(engine, second, Outcome(succeeded=True, exit_code=0), NOTHING, POLICY)
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
    assert jobs.finish(engine, claimed, failed, NOTHING, POLICY) == State.CANCELLED


def test_a_deleted_job_stops_its_attempt(engine: sa.Engine, clean_db: None) -> None:
    job_id = create(engine, queue="d")
    claimed = jobs.claim_next(engine, "d", "w")
    assert claimed is not None
    assert jobs.delete(engine, job_id) == State.RUNNING
    assert jobs.heartbeat(engine, {job_id: claimed.lease}) == {job_id: "cancelled"}
    ok = Outcome(succeeded=True, exit_code=0)
    assert jobs.finish(engine, claimed, ok, NOTHING, POLICY) is None


def test_promote_due_queues_scheduled_and_retrying_jobs(engine: sa.Engine, clean_db: None) -> None:
    past = create(engine, queue="p", run_at="2001-01-01T00:00:00Z")
    future = create(engine, queue="p", run_at="2999-01-01T00:00:00Z")
    assert (state_of(engine, past), state_of(engine, future)) == ("queued", "scheduled")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET state = 'scheduled' WHERE id = :id"), {"id": past})
    assert jobs.promote_due(engine) == [(past, "p")]
    assert (state_of(engine, past), state_of(engine, future)) == ("queued", "scheduled")


def _age(engine: sa.Engine, job_id: int, column: str, seconds: float) -> None:
    age(engine, column, seconds, job_id)


def test_mark_lost_retries_fails_or_cancels_by_the_jobs_own_rules(
    engine: sa.Engine, clean_db: None
) -> None:
    retry = create(engine, queue="lost", max_retries=1)
    no_retry = create(engine, queue="lost", max_retries=0)
    cancel = create(engine, queue="lost", max_retries=1)
    fresh = create(engine, queue="lost")
    claimed = {job.id: job for job in (jobs.claim_next(engine, "lost", "w") for _ in range(4))}
    assert set(claimed) == {retry, no_retry, cancel, fresh}
    jobs.cancel(engine, cancel)
    for job_id in (retry, no_retry, cancel):
        _age(engine, job_id, "heartbeat_at", 120)

    lost = jobs.mark_lost(engine, stale_after=60, policy=POLICY)

    assert {(item.job_id, item.state) for item in lost} == {
        (retry, State.RETRYING),
        (no_retry, State.FAILED),
        (cancel, State.CANCELLED),
    }
    assert state_of(engine, fresh) == "running"  # its heartbeat is recent
    with engine.begin() as conn:
        errors = dict(conn.execute(sa.text("SELECT id, last_error FROM jobs")).all())
    assert errors[retry] == errors[no_retry] == "worker lost"
    # the lost attempt may come back: its writes no longer land
    ok = Outcome(succeeded=True, exit_code=0)
    assert jobs.finish(engine, claimed[retry], ok, NOTHING, POLICY) is None
    assert jobs.heartbeat(engine, {retry: claimed[retry].lease}) == {retry: "lost"}


def test_purge_deletes_old_final_jobs_in_batches(engine: sa.Engine, clean_db: None) -> None:
    old = [create(engine, queue="old") for _ in range(7)]
    for job_id in old:
        jobs.cancel(engine, job_id)
        _age(engine, job_id, "finished_at", 3600)
    recent = create(engine, queue="old")
    jobs.cancel(engine, recent)
    waiting = create(engine, queue="old")

    batches = []
    while deleted := jobs.purge_finished(engine, Retention(60, 60, 60), batch=3):
        batches.append(deleted)

    assert batches == [3, 3, 1]
    with engine.begin() as conn:
        left = {row.id for row in conn.execute(sa.text("SELECT id FROM jobs"))}
    assert left == {recent, waiting}


def _finished(engine: sa.Engine, how: str, queue: str = "kept") -> int:
    """A job that ended `how` (succeeded, failed, cancelled), with no retention of 0."""
    job_id = create(engine, queue=queue)
    if how == "cancelled":
        jobs.cancel(engine, job_id)
        return job_id
    claimed = jobs.claim_next(engine, queue, "w")
    assert claimed is not None and claimed.id == job_id
    outcome = Outcome(succeeded=True, exit_code=0) if how == "succeeded" else FAILED
    assert jobs.finish(engine, claimed, outcome, NOTHING, POLICY) == how
    return job_id


FAILED = Outcome(succeeded=False, exit_code=3, error="exit status 3")


def test_purge_keeps_each_outcome_for_its_own_retention(engine: sa.Engine, clean_db: None) -> None:
    retention = Retention(succeeded=100, failed=10, cancelled=1000)
    ages = {"young": 5, "middle": 50, "old": 500}
    made = {}
    for age_name, seconds in ages.items():
        for how in ("succeeded", "failed", "cancelled"):
            made[(age_name, how)] = job_id = _finished(engine, how)
            _age(engine, job_id, "finished_at", seconds)
    while jobs.purge_finished(engine, retention, batch=2):
        pass
    with engine.begin() as conn:
        left = {row.id for row in conn.execute(sa.text("SELECT id FROM jobs"))}
    kept = {key for key, job_id in made.items() if job_id in left}
    assert kept == {
        ("young", "succeeded"),
        ("young", "failed"),
        ("young", "cancelled"),
        ("middle", "succeeded"),
        ("middle", "cancelled"),
        ("old", "cancelled"),
    }


def test_a_retention_of_0_deletes_a_job_as_it_ends(engine: sa.Engine, clean_db: None) -> None:
    """As delayed_job deleted a job when it succeeded: a client polls until 404."""
    at_once = Retention(succeeded=0, failed=0, cancelled=0)
    waiting = create(engine, queue="zero")
    cancelled = jobs.cancel(engine, waiting, at_once)
    assert (cancelled.id, cancelled.state) == (waiting, "cancelled")  # the answer, then gone
    ok, bad, lost = (create(engine, queue="zero") for _ in range(3))
    claimed = {job.id: job for job in (jobs.claim_next(engine, "zero", "w") for _ in range(3))}
    succeeded = Outcome(succeeded=True, exit_code=0)
    assert jobs.finish(engine, claimed[ok], succeeded, NOTHING, POLICY, at_once) == "succeeded"
    then = jobs.NextClaim("zero", "w")
    state, _ = jobs.finish_and_claim(engine, claimed[bad], FAILED, NOTHING, POLICY, then, at_once)
    assert state == "failed"
    _age(engine, lost, "heartbeat_at", 120)
    (gone,) = jobs.mark_lost(engine, stale_after=60, policy=POLICY, retention=at_once)
    assert (gone.job_id, gone.state) == (lost, "failed")
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM jobs")).scalar() == 0
    # only the outcome kept 0 seconds goes: the others stay
    only_success = Retention(succeeded=0, failed=3600, cancelled=3600)
    kept = create(engine, queue="zero")
    jobs.cancel(engine, kept, only_success)
    assert state_of(engine, kept) == "cancelled"


def test_claims_a_worker_does_not_know_of_go_back_to_their_queue(
    engine: sa.Engine, clean_db: None
) -> None:
    """A claim whose answer the worker never got (its connection dropped during the commit)
    runs nowhere: the worker's monitor puts it back, without using up an attempt."""
    unknown, known, recent = (create(engine, queue="u", max_retries=0) for _ in range(3))
    claimed = {job.id: job for job in (jobs.claim_next(engine, "u", "host:1") for _ in range(3))}
    assert set(claimed) == {unknown, known, recent}
    for job_id in (unknown, known):
        _age(engine, job_id, "locked_at", 30)
    other = create(engine, queue="u")
    assert jobs.claim_next(engine, "u", "host:2") is not None  # another worker's: not ours
    _age(engine, other, "locked_at", 30)

    released = jobs.release_unregistered(engine, "host:1", {known}, older_than=10)

    assert released == [(unknown, "u")]
    with engine.begin() as conn:
        rows = {r.id: r for r in conn.execute(sa.text("SELECT id, state, attempts FROM jobs"))}
    assert (rows[unknown].state, rows[unknown].attempts) == ("queued", 0)
    assert {rows[j].state for j in (known, recent, other)} == {"running"}  # too young, known
    again = jobs.claim_next(engine, "u", "host:3")
    assert again is not None and (again.id, again.attempt) == (unknown, 1)
