"""Jobs run by real `dramatiq` worker processes against MariaDB and Redis; those marked
`@both_backends` also by the in-process worker of `jobrunner dev` (SQLite)."""

from __future__ import annotations

import datetime as dt
import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from service import db, jobs
from service.broker import make_broker
from service.config import Settings
from service.dispatch import dispatcher_for
from service.states import FINAL
from service.web.schemas import parse_create
from service.workers import NamedQueues
from tests.support import (
    PROCESS_DEADLINE,
    Api,
    Process,
    both_backends,
    processes_with,
    start_worker,
    stop_all,
    wait_for,
)


def stamps(scratch: Path) -> list[tuple[int, int, str, float]]:
    """(job id, attempt, start|end, time) lines written by bin/stamp.sh, in file order."""
    rows = []
    for line in (scratch / "stamps").read_text().splitlines():
        job_id, attempt, what, when = line.split()
        rows.append((int(job_id), int(attempt), what, float(when)))
    return rows


@pytest.fixture
def own_worker(base_env: dict[str, str], log_dir: Path) -> Iterator[list[Process]]:
    """Start extra workers with `own_worker.append(start_worker(...))`; stopped at the end."""
    started: list[Process] = []
    yield started
    stop_all(started)


@both_backends
def test_hello_world_runs_in_job_home(worked_api: Api, job_home: Path) -> None:
    response = worked_api.http.post("/jobs", data={"job[command]": "bin/hello_world.sh"})
    job = worked_api.wait(response.json()["id"])
    assert (job["state"], job["exit_code"], job["last_error"]) == ("succeeded", 0, None)
    assert job["attempts"] == 1
    assert job["started_at"] and job["finished_at"] and job["locked_by"]
    assert worked_api.output(job["id"]) == "Hello,\nworld!\n"
    pwd = worked_api.wait(worked_api.submit(command="pwd")["id"])
    assert worked_api.output(pwd["id"]) == f"{job_home}\n"


@both_backends
def test_the_command_gets_a_clean_environment_plus_its_own(worked_api: Api, job_home: Path) -> None:
    job = worked_api.submit(command="env | sort", env={"GREETING": "hi there"})
    assert worked_api.wait(job["id"])["state"] == "succeeded"
    env = dict(line.split("=", 1) for line in worked_api.output(job["id"]).splitlines())
    assert env["GREETING"] == "hi there"
    assert env["JOBRUNNER_JOB_ID"] == str(job["id"])
    assert env["PATH"].startswith(f"{job_home}/bin:")
    for secret in (
        "SECRET_OF_THE_WORKER",
        "DATABASE_URL",
        "REDIS_URL",
        "JOBRUNNER_REDIS_NAMESPACE",
    ):
        assert secret not in env


@both_backends
def test_argv_runs_without_a_shell(worked_api: Api) -> None:
    job = worked_api.submit(argv=["echo", "$HOME", "a;b", "`id`"])
    assert worked_api.wait(job["id"])["state"] == "succeeded"
    assert worked_api.output(job["id"]) == "$HOME a;b `id`\n"


@both_backends
def test_a_failing_command_fails_with_its_exit_status(worked_api: Api) -> None:
    job = worked_api.wait(worked_api.submit(command="echo oops >&2; exit 3")["id"])
    assert (job["state"], job["exit_code"], job["last_error"]) == ("failed", 3, "exit status 3")
    assert job["failed_at"] is not None and job["attempts"] == 1
    assert worked_api.output(job["id"]) == "oops\n"


@both_backends
def test_a_program_that_cannot_start(worked_api: Api) -> None:
    job = worked_api.wait(worked_api.submit(argv=["/no/such/program"])["id"])
    assert job["state"] == "failed"
    assert job["last_error"].startswith("could not start:")
    assert job["exit_code"] is None


@both_backends
def test_retries_with_backoff_until_success(worked_api: Api, scratch: Path) -> None:
    job = worked_api.submit(command="bin/flaky.sh 3", max_retries=3)
    seen = {worked_api.wait(job["id"], {"retrying", "succeeded", "failed"})["state"]}
    final = worked_api.wait(job["id"])
    seen.add(final["state"])
    assert "retrying" in seen
    assert (final["state"], final["attempts"]) == ("succeeded", 3)
    output = worked_api.output(job["id"])
    assert output.count("run ") == 3
    assert "--- jobrunner: attempt 3 ---" in output


@both_backends
def test_retries_stop_at_max_retries(worked_api: Api) -> None:
    job = worked_api.wait(worked_api.submit(command="bin/flaky.sh 9", max_retries=1)["id"])
    assert (job["state"], job["attempts"], job["last_error"]) == ("failed", 2, "exit status 1")


@both_backends
def test_backoff_grows_exponentially(worked_api: Api, scratch: Path) -> None:
    job = worked_api.submit(command="bin/stamp.sh; exit 1", max_retries=3)
    assert worked_api.wait(job["id"], timeout=30)["attempts"] == 4
    starts = [when for job_id, _, what, when in stamps(scratch) if what == "start"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(gaps) == 3
    # base 0.2 s, doubling, ±20 % jitter, picked up by a sweeper ticking every 0.2 s
    for attempt, gap in enumerate(gaps, start=1):
        assert gap >= 0.2 * 2 ** (attempt - 1) * 0.8, gaps


@both_backends
def test_timeout_kills_the_grandchildren(worked_api: Api) -> None:
    marker = f"sleep 7{uuid.uuid4().int % 1000:03d}"
    job = worked_api.submit(command=f"{marker} & {marker}; echo never", timeout=1)
    wait_for(lambda: processes_with(marker), timeout=PROCESS_DEADLINE, what="the command to start")
    final = worked_api.wait(job["id"])
    assert (final["state"], final["last_error"]) == ("failed", "timed out after 1s")
    wait_for(
        lambda: processes_with(marker) == [], timeout=PROCESS_DEADLINE, what="no grandchild left"
    )


@both_backends
def test_cancel_reaches_the_running_command_and_its_grandchildren(worked_api: Api) -> None:
    marker = f"sleep 8{uuid.uuid4().int % 1000:03d}"
    job = worked_api.submit(command=f"{marker} & {marker}; echo never")
    worked_api.wait(job["id"], {"running"})
    wait_for(lambda: processes_with(marker), timeout=PROCESS_DEADLINE, what="the command to start")
    response = worked_api.http.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    final = worked_api.wait(job["id"], timeout=10)
    assert (final["state"], final["last_error"]) == ("cancelled", "cancelled")
    assert final["finished_at"] is not None
    wait_for(
        lambda: processes_with(marker) == [], timeout=PROCESS_DEADLINE, what="no grandchild left"
    )


@both_backends
def test_delete_stops_a_running_command(worked_api: Api) -> None:
    marker = f"sleep 9{uuid.uuid4().int % 1000:03d}"
    job = worked_api.submit(command=marker)
    wait_for(lambda: processes_with(marker), timeout=PROCESS_DEADLINE, what="the command to start")
    assert worked_api.http.delete(f"/jobs/{job['id']}").status_code == 204
    wait_for(
        lambda: processes_with(marker) == [],
        timeout=PROCESS_DEADLINE,
        what="the command to be killed",
    )
    assert worked_api.http.get(f"/jobs/{job['id']}").status_code == 404


@both_backends
def test_huge_output_keeps_the_end_and_says_so(worked_api: Api) -> None:
    job = worked_api.submit(command="head -c 3000000 /dev/zero | tr '\\0' x; echo; echo THE END")
    final = worked_api.wait(job["id"])
    assert final["state"] == "succeeded"
    assert final["output_bytes"] == 3000000 + 1 + 8
    assert final["output_truncated"] is True
    response = worked_api.http.get(f"/jobs/{job['id']}/output")
    assert len(response.content) == 1024 * 1024
    assert response.content.endswith(b"xxx\nTHE END\n")
    assert response.headers["x-output-truncated"] == "true"
    assert int(response.headers["x-output-offset"]) == final["output_bytes"] - 1024 * 1024


@both_backends
def test_output_is_readable_while_the_job_runs(worked_api: Api) -> None:
    job = worked_api.submit(command="echo first; sleep 3; echo second")
    printed = time.monotonic()
    wait_for(lambda: worked_api.output(job["id"]) == "first\n", timeout=5, what="early output")
    assert time.monotonic() - printed < 2.5
    assert worked_api.job(job["id"])["state"] == "running"
    worked_api.http.post(f"/jobs/{job['id']}/cancel")


@both_backends
def test_a_scheduled_job_runs_at_its_time(worked_api: Api) -> None:
    run_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    job = worked_api.submit(command="true", run_at=run_at.isoformat())
    assert job["state"] == "scheduled"
    final = worked_api.wait(job["id"], timeout=10)
    assert final["state"] == "succeeded"
    assert final["started_at"] >= final["run_at"]


def test_duplicate_messages_do_not_run_a_job_twice(
    worked_api: Api, scratch: Path, base_env: dict[str, str], engine: sa.Engine
) -> None:
    job = worked_api.submit(command="bin/stamp.sh 1")
    settings = Settings.from_environ(base_env)
    dispatcher = dispatcher_for(
        make_broker(settings), settings, NamedQueues(engine, settings.lease_timeout)
    )
    worked_api.wait(job["id"], {"running"})
    assert dispatcher.notify("default", count=5)  # as if the broker redelivered it 5 times
    final = worked_api.wait(job["id"])
    dispatcher.broker.close()
    assert (final["state"], final["attempts"]) == ("succeeded", 1)
    assert [what for job_id, _, what, _ in stamps(scratch) if job_id == job["id"]] == [
        "start",
        "end",
    ]


def test_two_workers_never_run_one_job_twice(
    worked_api: Api, scratch: Path, base_env: dict[str, str], log_dir: Path, own_worker: list
) -> None:
    own_worker.append(start_worker(base_env, log_dir, "second", WORKER_QUEUES="beta"))
    own_worker.append(start_worker(base_env, log_dir, "third", WORKER_QUEUES="beta"))
    ids = [worked_api.submit(command="bin/stamp.sh 0.05", queue="beta")["id"] for _ in range(40)]
    for job_id in ids:
        assert worked_api.wait(job_id)["state"] == "succeeded"
    rows = stamps(scratch)
    assert sorted(job_id for job_id, _, what, _ in rows if what == "start") == sorted(ids)
    workers = {worked_api.job(job_id)["locked_by"] for job_id in ids}
    assert len(workers) >= 2  # the work was shared


def test_priority_holds_across_all_waiting_jobs_of_a_queue(
    worked_api: Api, scratch: Path, base_env: dict[str, str], log_dir: Path, own_worker: list
) -> None:
    # one worker thread on a queue of its own: jobs wait while it is busy
    own_worker.append(
        start_worker(base_env, log_dir, "prio", WORKER_QUEUES="prio", WORKER_THREADS="1")
    )
    blocker = worked_api.submit(command="bin/stamp.sh 1.5", queue="prio")
    worked_api.wait(blocker["id"], {"running"})
    priorities = [5, 1, 3, 0, 2, 1, 10, -1]
    ids = {
        worked_api.submit(command="bin/stamp.sh", queue="prio", priority=p)["id"]: p
        for p in priorities
    }
    for job_id in ids:
        assert worked_api.wait(job_id, timeout=30)["state"] == "succeeded"
    order = [job_id for job_id, _, what, _ in stamps(scratch) if what == "start"]
    assert order[0] == blocker["id"]
    expected = sorted(ids, key=lambda job_id: (ids[job_id], job_id))
    assert order[1:] == expected


def test_named_queues_are_served_only_by_their_workers(
    worked_api: Api, base_env: dict[str, str], log_dir: Path, own_worker: list
) -> None:
    job = worked_api.submit(command="true", queue="gamma")
    # a later job on a queue the shared worker serves: once it is done, the shared worker
    # (default, alpha, beta) has seen every message sent before it, and left gamma alone
    later = worked_api.submit(command="true", queue="default")
    assert worked_api.wait(later["id"])["state"] == "succeeded"
    assert worked_api.job(job["id"])["state"] == "queued"
    own_worker.append(start_worker(base_env, log_dir, "gamma", WORKER_QUEUES="gamma"))
    assert worked_api.wait(job["id"])["state"] == "succeeded"


def test_a_worker_for_every_queue_finds_queues_created_after_it_started(
    worked_api: Api, base_env: dict[str, str], log_dir: Path, own_worker: list
) -> None:
    own_worker.append(start_worker(base_env, log_dir, "all"))
    queue = f"q{uuid.uuid4().hex[:8]}"
    job = worked_api.submit(command="true", queue=queue)
    final = worked_api.wait(job["id"], timeout=10)
    assert final["state"] == "succeeded"
    assert final["queue"] == queue


def _create(engine: sa.Engine, settings: Settings, queue: str, commands: list[str]) -> list[int]:
    """Jobs committed in one batch, then their queue woken once: as the web's submitter does."""
    specs = [parse_create({"command": c, "queue": queue}, settings) for c in commands]
    created = [job.id for job in jobs.create_many(engine, specs)]
    broker = make_broker(settings)
    try:
        assert dispatcher_for(broker, settings, NamedQueues(engine, settings.lease_timeout)).wake(
            queue
        )
    finally:
        broker.close()
    return created


def _final(engine: sa.Engine, ids: list[int]) -> dict[int, sa.Row]:
    """The rows of these jobs once every one of them is final (else an empty dict)."""
    with engine.connect() as conn:
        rows = {
            row.id: row
            for row in conn.execute(
                sa.select(db.jobs.c.id, db.jobs.c.state, db.jobs.c.started_at).where(
                    db.jobs.c.id.in_(ids)
                )
            )
        }
    return rows if all(row.state in FINAL for row in rows.values()) else {}


def test_one_wake_up_fans_out_to_every_idle_thread(
    engine: sa.Engine,
    clean_db: None,
    scratch: Path,
    base_env: dict[str, str],
    log_dir: Path,
    own_worker: list,
) -> None:
    """A burst of jobs is woken with one message; the thread that takes it wakes the next, so
    every thread of the worker (4) runs one of them at once."""
    settings = Settings.from_environ(base_env)
    own_worker.append(start_worker(base_env, log_dir, "fanout", WORKER_QUEUES="fanout"))
    ids = _create(engine, settings, "fanout", ["bin/stamp.sh 1"] * 8)
    rows = wait_for(lambda: _final(engine, ids), timeout=PROCESS_DEADLINE, what="8 jobs")
    assert {row.state for row in rows.values()} == {"succeeded"}
    running, most = 0, 0
    for _, what in sorted((when, what) for job, _, what, when in stamps(scratch) if job in ids):
        running += 1 if what == "start" else -1
        most = max(most, running)
    assert most == 4, f"at most {most} of the 4 threads ran at once"


def test_a_thread_that_keeps_a_busy_queue_lets_other_queues_have_a_turn(
    engine: sa.Engine, clean_db: None, base_env: dict[str, str], log_dir: Path, own_worker: list
) -> None:
    """One thread, a queue with ~6 s of short jobs, then one job in another queue: it starts
    after the busy queue's turn (KEEP_QUEUE_S), not after the whole backlog."""
    settings = Settings.from_environ(base_env)
    env = dict(base_env, WORKER_THREADS="1")
    own_worker.append(start_worker(env, log_dir, "turns", WORKER_QUEUES="turn_a,turn_b"))
    busy = _create(engine, settings, "turn_a", ["sleep 0.02"] * 300)
    wait_for(lambda: _started(engine, busy[0]), timeout=PROCESS_DEADLINE, what="the busy queue")
    (other,) = _create(engine, settings, "turn_b", ["true"])
    rows = wait_for(lambda: _final(engine, [*busy, other]), timeout=120, what="every job")
    started = sorted(busy, key=lambda job_id: rows[job_id].started_at)
    before = sum(1 for job_id in busy if rows[job_id].started_at < rows[other].started_at)
    assert before < len(busy) / 2, f"{before} of {len(busy)} busy jobs ran before the other"
    assert started[0] == busy[0]


def _started(engine: sa.Engine, job_id: int) -> bool:
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.jobs.c.started_at).where(db.jobs.c.id == job_id)).one()
    return row.started_at is not None


def test_a_busy_process_leaves_other_queues_wake_ups_to_idle_ones(
    engine: sa.Engine, clean_db: None, base_env: dict[str, str], log_dir: Path, own_worker: list
) -> None:
    """A worker process whose only thread is busy takes no wake-up of another queue it serves
    (actors.consumer.Slots): an idle process serving that queue runs its jobs at once."""
    settings = Settings.from_environ(base_env)
    one = dict(base_env, WORKER_THREADS="1")
    own_worker.append(start_worker(one, log_dir, "busy", WORKER_QUEUES="slot_a,slot_b"))
    (long,) = _create(engine, settings, "slot_a", ["sleep 8"])
    wait_for(lambda: _started(engine, long), timeout=PROCESS_DEADLINE, what="the long job")
    own_worker.append(start_worker(one, log_dir, "idle", WORKER_QUEUES="slot_b"))
    for _ in range(4):  # each would wait for the long job with even odds if it were taken
        (job,) = _create(engine, settings, "slot_b", ["true"])
        rows = wait_for(
            lambda job=job: _final(engine, [job]), timeout=PROCESS_DEADLINE, what="the job"
        )
        with engine.connect() as conn:
            waited = conn.execute(
                sa.text(
                    "SELECT TIMESTAMPDIFF(MICROSECOND, created_at, started_at) FROM jobs "
                    "WHERE id = :id"
                ),
                {"id": job},
            ).scalar_one()
        assert rows[job].state == "succeeded"
        assert waited / 1e6 < 3, f"job {job} waited {waited / 1e6:.1f} s for a busy process"
