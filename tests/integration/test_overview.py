"""GET /workers and GET /queues against real worker processes, and a worker's registration."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.support import PROCESS_DEADLINE, Api, Process, start_worker, wait_for


def parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_a_worker_is_listed_with_its_queues_and_what_it_runs(
    api: Api, base_env: dict[str, str], log_dir: Path
) -> None:
    worker = start_worker(base_env, log_dir, "listed", WORKER_QUEUES="listed_a,listed_b")
    try:
        job = api.submit(command="sleep 30", queue="listed_a")
        api.wait(job["id"], {"running"})

        def listed() -> dict | None:
            for entry in api.http.get("/workers").json():
                if job["id"] in entry["running"]:
                    return entry
            return None

        entry = wait_for(listed, timeout=PROCESS_DEADLINE, what="the worker to list the job")
        assert entry["queues"] == ["listed_a", "listed_b"]
        assert entry["name"] == api.job(job["id"])["locked_by"]
        assert entry["name"] == f"{entry['host']}:{entry['pid']}"
        age = dt.datetime.now(dt.UTC) - parse(entry["last_seen_at"])
        assert age < dt.timedelta(seconds=5)  # renewed every heartbeat interval (0.2 s here)
        assert parse(entry["started_at"]) <= parse(entry["last_seen_at"])
        api.http.post(f"/jobs/{job['id']}/cancel")
        api.wait(job["id"])
    finally:
        worker.stop()
    names = {entry["name"] for entry in api.http.get("/workers").json()}
    assert entry["name"] not in names  # a graceful stop deregisters at once


def test_queues_show_waiting_running_and_the_oldest_wait(
    api: Api, base_env: dict[str, str], log_dir: Path
) -> None:
    worker: Process = start_worker(base_env, log_dir, "queues", WORKER_QUEUES="depth")
    try:
        running = api.submit(command="sleep 30", queue="depth")
        api.wait(running["id"], {"running"})
        worker.stop()  # hands it back: now every job of the queue waits
        first = api.submit(command="true", queue="depth", priority=5)
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        api.submit(command="true", queue="depth", run_at=later)  # waiting, not due
        api.submit(command="true", queue="other")
        queues = {entry["name"]: entry for entry in api.http.get("/queues").json()}
        assert queues["depth"]["waiting"] == 3 and queues["depth"]["running"] == 0
        assert queues["other"] == {
            "name": "other",
            "waiting": 1,
            "running": 0,
            "oldest_waiting_seconds": queues["other"]["oldest_waiting_seconds"],
            "concurrency": None,
        }
        created = parse(api.job(first["id"])["created_at"])
        oldest = queues["depth"]["oldest_waiting_seconds"]
        # the handed-back job has waited since it was created, longer than the others
        assert oldest >= (dt.datetime.now(dt.UTC) - created).total_seconds()
        assert list(queues) == sorted(queues)
    finally:
        worker.stop()
