"""Isolation: a flood of queue names costs a worker nothing that lasts."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
from pathlib import Path

import httpx
import redis
import sqlalchemy as sa

from tests.conftest import REDIS_URL
from tests.support import AUTH, PROCESS_DEADLINE, Api, age, start_worker, wait_for

QUEUES = 1000  # JOBRUNNER_MAX_QUEUES, the default


def threads_of(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def redis_connections_of(pid: int) -> int:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return sum(1 for c in client.client_list() if c.get("name") == f"jobrunner:{pid}")
    finally:
        client.close()


def test_a_thousand_queue_names_cost_a_worker_nothing_that_lasts(
    api: Api, engine: sa.Engine, base_env: dict[str, str], log_dir: Path
) -> None:
    worker = start_worker(base_env, log_dir, "flood", WORKER_THREADS="4")  # every queue
    try:
        listed = wait_for(lambda: api.http.get("/workers").json(), timeout=PROCESS_DEADLINE)
        pid = next(w["pid"] for w in listed if w["queues"] is None)
        probe = api.submit(command="true", queue="flood_probe")  # connections in use once
        api.wait(probe["id"])
        threads, connections = threads_of(pid), redis_connections_of(pid)

        # not due yet: every one of the queues holds a job at once
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).isoformat()

        # one client for the 8 threads: a client each request would build an SSL context each
        # time (~35 ms of CPU), which made this loop, not the server, the slow part
        with httpx.Client(base_url=api.base_url, headers=AUTH, timeout=30) as client:

            def submit(i: int) -> int:
                job = {"command": "true", "queue": f"flood_{i}", "run_at": later}
                response = client.post("/jobs", json=job)
                assert response.status_code == 201, response.text
                return int(response.json()["id"])

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(submit, range(QUEUES)))
        over = api.http.post("/jobs", json={"command": "true", "queue": "flood_one_too_many"})
        assert over.status_code == 422  # a new queue past the cap
        assert "JOBRUNNER_MAX_QUEUES" in over.json()["queue"][0]
        known = api.http.post("/jobs", json={"command": "true", "queue": "flood_7"})
        assert known.status_code == 201  # a queue that holds jobs already is fine
        age(engine, "run_at", 600)  # their time has come: the sweeper queues them

        def all_ran() -> bool:
            with engine.connect() as conn:
                done = conn.exec_driver_sql("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'")
                return done.scalar_one() == QUEUES + 2  # the flood's, the probe's, flood_7's

        wait_for(all_ran, timeout=120, interval=0.5, what=f"{QUEUES} jobs to run")
        assert {api.job(i)["state"] for i in ids[:: len(ids) // 20]} == {"succeeded"}
        assert threads_of(pid) == threads
        assert redis_connections_of(pid) <= connections + 4  # the pool: at most a thread's
        # the emptied queues are forgotten: new names are welcome again
        fresh = api.http.post("/jobs", json={"command": "true", "queue": "flood_later"})
        assert fresh.status_code == 201

        # and everything else still works at once
        ordinary = api.submit(command="echo still here")
        assert api.wait(ordinary["id"], timeout=10)["state"] == "succeeded"
        long = api.submit(command="echo started; sleep 60")
        url = f"{api.base_url}/jobs/{long['id']}/output?follow=1"
        with httpx.stream("GET", url, headers=AUTH, timeout=20) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "started"
            assert api.http.post(f"/jobs/{long['id']}/cancel").status_code == 202
            assert list(lines) == []  # the stream ends with the job
        assert api.wait(long["id"], timeout=10)["state"] == "cancelled"
    finally:
        worker.stop()
