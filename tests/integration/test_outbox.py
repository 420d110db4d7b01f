"""The callback outbox, straight against MariaDB: an event in the transaction of every final
state (whoever makes it final), its body rendered before a retention of 0 deletes the job;
claims that expire when their sender dies; results fenced by the claim."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from service import callbacks, jobs, outbox, queries
from service.config import Settings
from service.db import transaction, utcnow
from service.errors import RejectedByDatabase
from service.jobs import Outcome, OutputSnapshot
from service.states import Retention, RetryPolicy
from service.web.schemas import parse_create
from tests.support import age
from tests.unit.test_callbacks import SECRET

SETTINGS = Settings(callback_secrets=(SECRET,), callback_allow=("127.0.0.1",))
NOTHING = OutputSnapshot(b"secret output", 0)
POLICY = RetryPolicy(base=1, cap=1)
HOOK = "http://127.0.0.1:9/hook"
EVERY = "http://127.0.0.1:9/every"
AT_ONCE = Retention(succeeded=0, failed=0, cancelled=0)


def create(engine: sa.Engine, **fields: Any) -> int:
    spec = parse_create({"command": "true", "callback_url": HOOK, **fields}, SETTINGS)
    job, created = jobs.create(engine, spec)
    assert created
    return job.id


def events(engine: sa.Engine) -> list[Any]:
    with engine.begin() as conn:
        return conn.execute(sa.text("SELECT * FROM callback_events ORDER BY job_id, url, id")).all()


def clear(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM callback_events")
        conn.exec_driver_sql("DELETE FROM callback_deliveries")


def test_every_final_state_writes_its_event_before_retention_deletes_the_job(
    engine: sa.Engine, clean_db: None
) -> None:
    clear(engine)
    waiting = create(engine, queue="ob", env={"API_KEY": "hunter2"})
    jobs.cancel(engine, waiting, AT_ONCE, callback_url=EVERY)
    ok, bad, lost = (create(engine, queue="ob") for _ in range(3))
    retried = create(engine, queue="ob2", max_retries=1)
    claimed = {job.id: job for job in (jobs.claim_next(engine, "ob", "w") for _ in range(3))}
    done = Outcome(succeeded=True, exit_code=0)
    assert jobs.finish(engine, claimed[ok], done, NOTHING, POLICY, AT_ONCE, EVERY) == "succeeded"
    failed = Outcome(succeeded=False, exit_code=1, error="exit status 1")
    then = jobs.NextClaim("ob", "w")
    state, _ = jobs.finish_and_claim(
        engine, claimed[bad], failed, NOTHING, POLICY, then, AT_ONCE, EVERY
    )
    assert state == "failed"
    age(engine, "heartbeat_at", 120, lost)
    (gone,) = jobs.mark_lost(engine, 60, POLICY, retention=AT_ONCE, callback_url=EVERY)
    assert gone.job_id == lost
    first = jobs.claim_next(engine, "ob2", "w")
    assert first is not None
    assert jobs.finish(engine, first, failed, NOTHING, POLICY, AT_ONCE, EVERY) == "retrying"

    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT id FROM jobs")).scalars().all() == [retried]
    rows = events(engine)
    by_job = {(row.job_id, row.url): row for row in rows}
    assert set(by_job) == {(j, u) for j in (waiting, ok, bad, lost) for u in (HOOK, EVERY)}
    assert len(rows) == 8  # and none for the attempt that is retried
    for job_id, kind in ((waiting, "cancelled"), (ok, "succeeded"), (bad, "failed")):
        event = json.loads(by_job[(job_id, HOOK)].body)
        assert event["type"] == f"job.{kind}" and event["data"]["id"] == job_id
        assert event["data"]["state"] == kind
    lost_event = json.loads(by_job[(lost, HOOK)].body)
    assert lost_event["data"]["end_reason"] == "worker_lost"
    for row in rows:
        assert b"hunter2" not in row.body and b"secret output" not in row.body
        assert row.state == "pending" and row.attempts == 0
    assert by_job[(ok, HOOK)].event_id == by_job[(ok, EVERY)].event_id


def test_a_job_without_a_callback_writes_no_event(engine: sa.Engine, clean_db: None) -> None:
    clear(engine)
    spec = parse_create({"command": "true", "queue": "plain"}, SETTINGS)
    job, _ = jobs.create(engine, spec)
    claimed = jobs.claim_next(engine, "plain", "w")
    assert claimed is not None and claimed.id == job.id
    jobs.finish(engine, claimed, Outcome(succeeded=True, exit_code=0), NOTHING, POLICY)
    assert events(engine) == []


def test_a_claim_expires_when_its_sender_dies_and_results_are_fenced(
    engine: sa.Engine, clean_db: None
) -> None:
    clear(engine)
    job_id = create(engine, queue="fence")
    jobs.cancel(engine, job_id)
    (due,) = outbox.due(engine, busy=(), limit=10)
    first = outbox.claim(engine, due, hold_s=0.0)  # its sender "dies" now
    assert first is not None and first.attempt == 1
    assert outbox.claim(engine, due, hold_s=30) is None  # the same claim cannot be taken twice
    (again,) = outbox.due(engine, busy=(), limit=10)  # the claim expired: due again
    second = outbox.claim(engine, again, hold_s=30)
    assert second is not None and second.event_id == first.event_id and second.attempt == 2
    assert outbox.due(engine, busy=(), limit=10) == []
    late = outbox.Attempt(200, None, True, None)
    assert not outbox.record(engine, first, late)  # the dead sender's result changes nothing
    assert events(engine)[0].state == "pending"
    assert outbox.record(engine, second, late)
    assert events(engine)[0].state == "delivered"
    assert outbox.due(engine, busy={"http://127.0.0.1:9"}, limit=10) == []


def test_the_drivers_errors_come_out_as_the_databases_refusal(
    engine: sa.Engine, clean_db: None
) -> None:
    """The outbox INSERT runs on the driver's cursor: its errors still reach the error
    boundary (service.db.transaction) as every statement's do."""
    clear(engine)
    job_id = create(engine, queue="refused")
    jobs.cancel(engine, job_id)
    with transaction(engine) as conn:
        job = queries.get(conn, job_id)
    assert job is not None
    with pytest.raises(RejectedByDatabase), transaction(engine) as conn:
        callbacks.record(conn, job, ["http://127.0.0.1:9/" + "x" * 3000], utcnow())
    assert [row.url for row in events(engine)] == [HOOK]  # the cancel's event, no other


def test_alike_successes_ended_together_write_an_event_each(
    engine: sa.Engine, clean_db: None
) -> None:
    """The batched ends of one worker process (jobs.end_attempts): one UPDATE for the alike
    successes, one INSERT for their events; a lost attempt among them writes none."""
    clear(engine)
    ids = [create(engine, queue="ob-batch", max_retries=1) for _ in range(3)]
    a, b, c = (jobs.claim_next(engine, "ob-batch", "w") for _ in range(3))
    assert a is not None and b is not None and c is not None
    assert jobs.hand_back(engine, b)  # b's attempt is over: its end must not count
    done = Outcome(succeeded=True, exit_code=0)
    ends = [jobs.AttemptEnd(job, done, NOTHING) for job in (a, b, c)]
    states = [state for state, _ in jobs.end_attempts(engine, ends, POLICY, None, EVERY)]
    assert states == ["succeeded", None, "succeeded"]
    rows = events(engine)
    assert sorted((row.job_id, row.url) for row in rows) == sorted(
        (job_id, url) for job_id in (ids[0], ids[2]) for url in (EVERY, HOOK)
    )
    for row in rows:
        body = json.loads(row.body)
        assert body["type"] == "job.succeeded" and body["data"]["id"] == row.job_id
        assert body["data"]["state"] == "succeeded" and body["data"]["exit_code"] == 0
        assert "env" not in body["data"] and "output" not in body["data"]
    # one event per job: its two destinations share its webhook-id
    assert len({row.event_id for row in rows}) == 2
