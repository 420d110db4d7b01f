"""Several attempts' ends and next claims in one transaction (service.jobs.end_attempts, the
write of actors.bookkeeper), straight against the database."""

from __future__ import annotations

import sqlalchemy as sa

from service import jobs
from service.config import Settings
from service.jobs import AttemptEnd, ClaimedJob, NextClaim, Outcome, OutputSnapshot
from service.states import RetryPolicy, State
from service.web.schemas import parse_create

SETTINGS = Settings()
NOTHING = OutputSnapshot(b"", 0)
POLICY = RetryPolicy(base=1, cap=1)
SUCCEEDED = Outcome(succeeded=True, exit_code=0)


def create(engine: sa.Engine, **fields) -> int:  # type: ignore[no-untyped-def]
    job, created = jobs.create(engine, parse_create({"command": "true", **fields}, SETTINGS))
    assert created
    return job.id


def claim(engine: sa.Engine, queue: str, count: int) -> list[ClaimedJob]:
    claimed = [jobs.claim_next(engine, queue, "w") for _ in range(count)]
    assert all(job is not None for job in claimed)
    return claimed  # type: ignore[return-value]


def rows(engine: sa.Engine, ids: list[int]) -> dict[int, sa.Row]:  # type: ignore[type-arg]
    with engine.begin() as conn:
        found = conn.execute(
            sa.select(
                jobs.jobs.c.id,
                jobs.jobs.c.state,
                jobs.jobs.c.lease,
                jobs.jobs.c.exit_code,
                jobs.jobs.c.heartbeat_at,
                jobs.jobs.c.finished_at,
                jobs.jobs.c.locked_by,
            ).where(jobs.jobs.c.id.in_(ids))
        ).all()
    return {row.id: row for row in found}


def test_a_batch_records_each_end_and_claims_the_next_jobs_in_order(
    engine: sa.Engine, clean_db: None
) -> None:
    first = [create(engine, queue="batch") for _ in range(3)]
    later = [create(engine, queue="batch", priority=p) for p in (5, -1, 0, 0)]
    a, b, c = claim(engine, "batch", 3)
    assert [a.id, b.id, c.id] == [later[1], *first[:2]]  # priority -1 first, then by id
    then = NextClaim("batch", "w2")
    failed = Outcome(succeeded=False, exit_code=3, error="exit status 3")
    ends = [
        AttemptEnd(a, SUCCEEDED, NOTHING, then),
        AttemptEnd(b, SUCCEEDED, NOTHING, then),  # alike: one UPDATE with a
        AttemptEnd(c, failed, OutputSnapshot(b"oops\n", 0), then),
    ]
    results = jobs.end_attempts(engine, ends, POLICY)
    assert [state for state, _ in results] == [State.SUCCEEDED, State.SUCCEEDED, State.FAILED]
    next_ids = [job.id for _, job in results if job is not None]
    assert next_ids == [first[2], later[2], later[3]]  # the best three left, best first
    after = rows(engine, [a.id, b.id, c.id, *next_ids])
    for job_id in (a.id, b.id):
        row = after[job_id]
        assert (row.state, row.exit_code, row.heartbeat_at) == ("succeeded", 0, None)
        assert row.finished_at is not None
    assert (after[c.id].state, after[c.id].exit_code) == ("failed", 3)
    for _, job in results:
        assert job is not None and (job.lease, job.attempt, job.worker) == (1, 1, "w2")
        assert (after[job.id].state, after[job.id].lease) == ("running", 1)
        assert after[job.id].locked_by == "w2" and after[job.id].heartbeat_at is not None


def test_a_lost_attempt_among_alike_successes_is_not_recorded(
    engine: sa.Engine, clean_db: None
) -> None:
    ids = [create(engine, queue="lost", max_retries=3) for _ in range(3)]
    a, b, c = claim(engine, "lost", 3)
    assert jobs.hand_back(engine, b)  # b's attempt is over: the job runs again elsewhere
    (b2,) = claim(engine, "lost", 1)
    assert b2.id == b.id and b2.lease == b.lease + 1
    ends = [AttemptEnd(job, SUCCEEDED, NOTHING) for job in (a, b, c)]
    results = jobs.end_attempts(engine, ends, POLICY)
    assert [state for state, _ in results] == [State.SUCCEEDED, None, State.SUCCEEDED]
    assert all(job is None for _, job in results)  # no claim asked for
    after = rows(engine, ids)
    assert (after[b.id].state, after[b.id].lease, after[b.id].finished_at) == ("running", 2, None)
    assert after[a.id].state == after[c.id].state == "succeeded"


def test_ends_that_ask_for_more_jobs_than_wait_get_none(engine: sa.Engine, clean_db: None) -> None:
    for _ in range(2):
        create(engine, queue="few")
    running = claim(engine, "few", 2)
    waiting = create(engine, queue="few")
    then = NextClaim("few", "w")
    output = [OutputSnapshot(b"a", 0), OutputSnapshot(b"b", 0)]  # unlike: one UPDATE each
    ends = [AttemptEnd(job, SUCCEEDED, out, then) for job, out in zip(running, output, strict=True)]
    (first_state, first_next), (second_state, second_next) = jobs.end_attempts(engine, ends, POLICY)
    assert first_state == second_state == State.SUCCEEDED
    assert first_next is not None and first_next.id == waiting  # the first end asked first
    assert second_next is None
    assert rows(engine, [waiting])[waiting].state == "running"
