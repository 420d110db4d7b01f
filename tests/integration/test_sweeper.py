"""The sweeper against MariaDB: lost workers, but only after a whole lease of visibility."""

from __future__ import annotations

import time

import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker

from actors.context import WorkerContext
from actors.sweeper import Sweeper
from service import jobs
from service.config import Settings
from service.dispatch import dispatcher_for
from service.web.schemas import parse_create
from tests.support import age, wait_for


def test_lost_attempts_wait_for_a_whole_lease_of_database_visibility(
    engine: sa.Engine, database_url: str, clean_db: None
) -> None:
    settings = Settings(
        database_url=database_url,
        redis_url="stub:",
        lease_timeout=0.6,
        heartbeat_interval=0.1,
        max_retries_limit=5,
    )
    broker = StubBroker()
    ctx = WorkerContext(settings, engine, broker, dispatcher_for(broker, settings, set))
    # a queue of its own: the suite's shared worker, if it runs, must not take the job
    fields = {"command": "true", "max_retries": 1, "queue": "sweeper_test"}
    jobs.create(engine, parse_create(fields, settings))
    assert jobs.claim_next(engine, "sweeper_test", "gone-worker") is not None
    # its worker stopped beating 3 s ago: stale for this sweeper (lease 0.6 s), not yet for the
    # shared worker's, which may run meanwhile on the same database (lease 5 s)
    age(engine, "heartbeat_at", 3)

    sweeper = Sweeper(ctx)
    sweeper.seen_database_since = time.monotonic()  # it just took over, or the database is back
    sweeper.find_lost()
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT state FROM jobs")).scalar() == "running"

    wait_for(lambda: time.monotonic() - sweeper.seen_database_since >= 0.6, timeout=2)
    sweeper.find_lost()
    with engine.begin() as conn:
        state, error = conn.execute(sa.text("SELECT state, last_error FROM jobs")).one()
    assert (state, error) == ("retrying", "worker lost")
    broker.close()


def test_an_end_its_worker_could_not_store_is_recorded_as_it_happened(
    engine: sa.Engine, database_url: str, clean_db: None
) -> None:
    """A worker whose command ended while the database was away keeps the end for the
    sweeper; if the worker is gone before the database is back, the sweeper records that end,
    output included, not `worker lost`."""
    settings = Settings(
        database_url=database_url, redis_url="stub:", lease_timeout=0.6, heartbeat_interval=0.1
    )
    broker = StubBroker()
    dispatcher = dispatcher_for(broker, settings, set)
    ctx = WorkerContext(settings, engine, broker, dispatcher)
    fields = {"command": "false", "queue": "sweeper_test"}
    ok, failed, unknown = (jobs.create(engine, parse_create(fields, settings))[0] for _ in "abc")
    claimed = {
        job.id: job for job in iter(lambda: jobs.claim_next(engine, "sweeper_test", "w"), None)
    }
    assert set(claimed) == {ok.id, failed.id, unknown.id}
    ends = {
        ok.id: jobs.KnownEnd(
            jobs.Outcome(succeeded=True, exit_code=0), jobs.OutputSnapshot(b"hi\n", 0)
        ),
        failed.id: jobs.KnownEnd(
            jobs.Outcome(succeeded=False, exit_code=3, error="exit status 3"),
            jobs.OutputSnapshot(b"oops\n", 0),
        ),
    }
    for job_id, end in ends.items():
        assert dispatcher.keep_end(job_id, claimed[job_id].lease, end.encode(), ttl=60)
    age(engine, "heartbeat_at", 3)

    sweeper = Sweeper(ctx)
    sweeper.seen_database_since = time.monotonic() - 1.0  # it has seen the database a lease
    sweeper.find_lost()
    with engine.begin() as conn:
        rows = {
            row.id: row
            for row in conn.execute(
                sa.text("SELECT id, state, exit_code, last_error, output FROM jobs")
            )
        }
    assert (rows[ok.id].state, rows[ok.id].exit_code, rows[ok.id].output) == (
        "succeeded",
        0,
        b"hi\n",
    )
    assert (rows[failed.id].state, rows[failed.id].last_error, rows[failed.id].output) == (
        "failed",
        "exit status 3",
        b"oops\n",
    )
    assert (rows[unknown.id].state, rows[unknown.id].last_error) == ("failed", "worker lost")
    broker.close()
