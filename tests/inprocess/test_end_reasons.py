"""How an attempt ended, as data: `end_reason` and `exit_signal` of the job resource."""

from __future__ import annotations

import sqlalchemy as sa

from actors.context import WorkerContext
from actors.run_job import keep_queue
from actors.sweeper import Sweeper
from service import jobs
from tests.support import Api, age


def ending(api: Api, job_id: int) -> tuple[str, str | None, int | None, int | None]:
    job = api.job(job_id)
    return job["state"], job["end_reason"], job["exit_code"], job["exit_signal"]


def test_each_way_an_attempt_ends(api: Api, worker: WorkerContext) -> None:
    ok = api.submit(command="true")["id"]
    status = api.submit(command="exit 3")["id"]
    killed = api.submit(command="kill -9 $$")["id"]
    slow = api.submit(command="sleep 30", timeout=1)["id"]
    missing = api.submit(argv=["no-such-program-here"])["id"]
    waiting = api.submit(command="true", queue="elsewhere")["id"]
    assert ending(api, ok) == ("queued", None, None, None)  # no attempt has ended yet
    while keep_queue(worker, "default"):  # turns of a second, until the queue is empty
        pass
    assert ending(api, ok) == ("succeeded", "exited", 0, None)
    assert ending(api, status) == ("failed", "exited", 3, None)
    assert ending(api, killed) == ("failed", "signal", None, 9)
    assert ending(api, slow) == ("failed", "timeout", None, None)
    assert ending(api, missing) == ("failed", "not_started", None, None)
    api.http.post(f"/jobs/{waiting}/cancel")
    assert ending(api, waiting) == ("cancelled", None, None, None)  # it never started


def test_a_lost_worker_and_a_retry(api: Api, worker: WorkerContext, engine: sa.Engine) -> None:
    job_id = api.submit(command="true", max_retries=0)["id"]
    assert jobs.claim_next(engine, "default", "gone:1") is not None
    age(engine, "heartbeat_at", 60, job_id)
    sweeper = Sweeper(worker)
    sweeper.seen_database_since = 0.0  # it has watched the database for a whole lease
    sweeper.find_lost()
    assert ending(api, job_id) == ("failed", "worker_lost", None, None)
    api.http.post(f"/jobs/{job_id}/retry")
    assert ending(api, job_id) == ("queued", None, None, None)  # a new run: nothing has ended
