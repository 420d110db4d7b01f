"""Concurrency keys with real worker processes (API.md section 6): the second deploy of a key
waits, takes no worker slot and holds up no other job; a worker killed mid-job, or stopped
(its job handed back), frees the key's slot once, and the key's next job starts."""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PROCESS_DEADLINE, Api, Process, start_worker, stop_all, wait_for


def stamps(scratch: Path) -> list[tuple[int, int, str, float]]:
    rows = []
    for line in (scratch / "stamps").read_text().splitlines():
        job_id, attempt, what, when = line.split()
        rows.append((int(job_id), int(attempt), what, float(when)))
    return rows


def never_side_by_side(scratch: Path, ids: set[int], since: float) -> None:
    """By bin/stamp.sh's lines from `since` on (a killed attempt writes no end: the test
    gives the time it knew it over): no two of these jobs ran at once."""
    running: set[tuple[int, int]] = set()
    for job_id, attempt, what, when in stamps(scratch):
        if job_id not in ids or when < since:
            continue
        if what == "start":
            assert not running, f"job {job_id} started while {running} ran"
            running.add((job_id, attempt))
        else:
            running.discard((job_id, attempt))


@pytest.fixture
def workers() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    stop_all(started)


def test_a_killed_worker_frees_its_keys_slot_and_the_next_job_starts(
    api: Api, scratch: Path, base_env: dict[str, str], log_dir: Path, workers: list[Process]
) -> None:
    first = start_worker(base_env, log_dir, "key-kill-1", WORKER_QUEUES="keykill")
    workers.append(first)
    deploy = {"queue": "keykill", "concurrency_key": "svc"}
    a = api.submit(command="bin/stamp.sh 60", **deploy)
    api.wait(a["id"], {"running"})
    b = api.submit(command="bin/stamp.sh", **deploy)
    plain = api.submit(command="bin/stamp.sh", queue="keykill")
    assert api.wait(plain["id"])["state"] == "succeeded"  # not held up by the full key
    assert api.job(b["id"])["state"] == "queued"
    assert api.job(b["id"])["concurrency_limit"] == 1
    first.kill_group()  # SIGKILL: the worker and the command of `a`
    workers.append(start_worker(base_env, log_dir, "key-kill-2", WORKER_QUEUES="keykill"))
    lost = api.wait(a["id"], timeout=PROCESS_DEADLINE)
    over = time.time()
    assert (lost["state"], lost["end_reason"]) == ("failed", "worker_lost")
    done = api.wait(b["id"], timeout=PROCESS_DEADLINE)
    assert done["state"] == "succeeded"
    assert done["started_at"] >= lost["finished_at"]
    assert [row[2] for row in stamps(scratch) if row[0] == b["id"]] == ["start", "end"]
    assert all(when >= over - 1 for job_id, _, _, when in stamps(scratch) if job_id == b["id"])
    listed = api.http.get("/jobs", params={"concurrency_key": "svc"}).json()
    assert [job["id"] for job in listed] == [a["id"], b["id"]]


def test_a_stopping_worker_hands_back_and_the_key_goes_on(
    api: Api, scratch: Path, base_env: dict[str, str], log_dir: Path, workers: list[Process]
) -> None:
    first = start_worker(
        base_env, log_dir, "key-stop-1", WORKER_QUEUES="keystop", JOBRUNNER_SHUTDOWN_GRACE="0.5"
    )
    workers.append(first)
    deploy = {"queue": "keystop", "concurrency_key": "svc2", "concurrency_limit": 1}
    a = api.submit(command="bin/stamp.sh 2", **deploy)
    api.wait(a["id"], {"running"})
    waiting = [api.submit(command="bin/stamp.sh 0.2", **deploy) for _ in range(3)]
    first.signal(signal.SIGTERM)
    wait_for(lambda: api.job(a["id"])["state"] == "queued", timeout=PROCESS_DEADLINE)
    over = time.time()
    first.stop()
    workers.append(start_worker(base_env, log_dir, "key-stop-2", WORKER_QUEUES="keystop"))
    workers.append(start_worker(base_env, log_dir, "key-stop-3", WORKER_QUEUES="keystop"))
    ids = {a["id"], *(job["id"] for job in waiting)}
    for job_id in ids:
        assert api.wait(job_id, timeout=PROCESS_DEADLINE)["state"] == "succeeded"
    never_side_by_side(scratch, ids, over)


def test_a_queue_cap_holds_across_workers(
    api: Api, scratch: Path, base_env: dict[str, str], log_dir: Path, workers: list[Process]
) -> None:
    caps = {"WORKER_QUEUES": "capq,capfree", "JOBRUNNER_QUEUE_CONCURRENCY": "capq=1"}
    workers.append(start_worker(base_env, log_dir, "cap-1", **caps))
    workers.append(start_worker(base_env, log_dir, "cap-2", **caps))
    capped = [api.submit(command="bin/stamp.sh 0.3", queue="capq") for _ in range(5)]
    free = [api.submit(command="bin/stamp.sh 0.3", queue="capfree") for _ in range(4)]
    for job in capped + free:
        assert api.wait(job["id"], timeout=PROCESS_DEADLINE)["state"] == "succeeded"
    never_side_by_side(scratch, {job["id"] for job in capped}, 0.0)
    starts = {job_id: when for job_id, _, what, when in stamps(scratch) if what == "start"}
    ends = {job_id: when for job_id, _, what, when in stamps(scratch) if what == "end"}
    free_ids = [job["id"] for job in free]
    overlapping = any(
        starts[a] < ends[b] and starts[b] < ends[a] for a in free_ids for b in free_ids if a < b
    )
    assert overlapping  # the uncapped queue did run side by side


def test_three_workers_racing_on_keys_never_exceed_a_limit(
    api: Api, scratch: Path, base_env: dict[str, str], log_dir: Path, workers: list[Process]
) -> None:
    """Three worker roles (2 processes x 4 threads each) take a burst of jobs of two keys
    (limits 1 and 2) and plain ones; bin/stamp.sh's lines, written by the commands themselves
    while they run, are the ledger."""
    for n in range(3):
        workers.append(
            start_worker(
                base_env, log_dir, f"key-race-{n}", WORKER_QUEUES="keyrace", WORKER_PROCESSES="2"
            )
        )
    limits = {"solo": 1, "pair": 2}
    submitted: dict[int, str | None] = {}
    for _ in range(12):
        for key, limit in limits.items():
            fields = {"concurrency_key": key, "concurrency_limit": limit}
            job = api.submit(command="bin/stamp.sh 0.1", queue="keyrace", **fields)
            submitted[job["id"]] = key
        submitted[api.submit(command="bin/stamp.sh 0.1", queue="keyrace")["id"]] = None
    for job_id in submitted:
        assert api.wait(job_id, timeout=PROCESS_DEADLINE)["state"] == "succeeded"
    events = []
    for job_id, _, what, when in stamps(scratch):
        if job_id in submitted:
            events.append((when, 0 if what == "end" else 1, submitted[job_id]))
    running: dict[str | None, int] = {}
    most: dict[str | None, int] = {}
    for _, start, key in sorted(events):  # on a tie, an end before a start
        running[key] = running.get(key, 0) + (1 if start else -1)
        most[key] = max(most.get(key, 0), running[key])
    assert most["solo"] == 1 and most["pair"] <= 2, most
    assert most[None] >= 2, most  # the plain jobs ran side by side meanwhile
    lockers = {api.job(job_id)["locked_by"] for job_id in submitted}
    assert len(lockers) >= 3, lockers  # the work was spread over several processes


def test_the_end_of_a_keys_job_wakes_the_queue_of_its_next(
    api: Api, base_env: dict[str, str], log_dir: Path, workers: list[Process]
) -> None:
    """A key spans queues: the next job of the key, in another queue, starts at once when the
    slot frees (a wake-up of its queue), not when the sweeper finds it waiting."""
    workers.append(start_worker(base_env, log_dir, "key-wake", WORKER_QUEUES="kwx,kwy"))
    first = api.submit(command="sleep 1", queue="kwx", concurrency_key="kw")
    api.wait(first["id"], {"running"})
    second = api.submit(command="true", queue="kwy", concurrency_key="kw")
    done = api.wait(second["id"], timeout=PROCESS_DEADLINE)
    ended = api.job(first["id"])
    assert done["state"] == "succeeded"
    gap = dt.datetime.fromisoformat(done["started_at"]) - dt.datetime.fromisoformat(
        ended["finished_at"]
    )
    assert dt.timedelta(0) <= gap < dt.timedelta(seconds=2), gap
