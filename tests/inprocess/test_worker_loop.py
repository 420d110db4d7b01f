"""A worker's own loop, in the test's thread: wake-ups, claims, the run and its record."""

from __future__ import annotations

import datetime as dt

import dramatiq

from actors.context import WorkerContext
from actors.run_job import keep_queue
from actors.sweeper import Sweeper
from service.dispatch import ANY_QUEUE
from tests.support import Api


def test_a_thread_keeps_its_queue_until_it_is_empty(api: Api, worker: WorkerContext) -> None:
    ids = [api.submit(command=f"echo {n}")["id"] for n in range(3)]
    other = api.submit(command="true", queue="other")["id"]
    assert keep_queue(worker, "default") == 3
    for n, job_id in enumerate(ids):
        job = api.job(job_id)
        assert (job["state"], job["exit_code"], job["attempts"]) == ("succeeded", 0, 1)
        assert api.output(job_id) == f"{n}\n"
    assert api.job(other)["state"] == "queued"  # another queue: another thread's turn


def messages(worker: WorkerContext) -> list[tuple[str, ...]]:
    """The wake-ups waiting in the in-process broker: the job queue each names."""
    waiting = worker.broker.queues.get(ANY_QUEUE)  # type: ignore[attr-defined]
    if waiting is None:
        return []
    return [tuple(dramatiq.Message.decode(data).args) for data in list(waiting.queue)]


def test_a_wake_up_is_sent_once_until_a_thread_takes_it(api: Api, worker: WorkerContext) -> None:
    dispatcher = worker.dispatcher
    for _ in range(5):
        api.submit(command="true", queue="burst")
    assert messages(worker) == [("burst",)]  # five commits, one wake-up
    assert dispatcher.wake_pending("burst")
    dispatcher.woken("burst")  # a thread took it: the next commit wakes the queue again
    api.submit(command="true", queue="burst")
    assert messages(worker) == [("burst",), ("burst",)]


def test_failures_and_retries_are_recorded(api: Api, worker: WorkerContext) -> None:
    failed = api.submit(argv=["sh", "-c", "echo oops; exit 3"])["id"]
    missing = api.submit(argv=["no-such-program-here"])["id"]
    keep_queue(worker, "default")
    job = api.job(failed)
    assert (job["state"], job["exit_code"], job["last_error"]) == ("failed", 3, "exit status 3")
    assert api.output(failed) == "oops\n"
    job = api.job(missing)
    assert job["state"] == "failed" and job["last_error"].startswith("could not start")


def test_the_sweeper_queues_a_due_job_and_wakes_its_queue(api: Api, worker: WorkerContext) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=300)
    job_id = api.submit(command="true", queue="later", run_at=soon.isoformat())["id"]
    assert api.job(job_id)["state"] == "scheduled"
    sweeper = Sweeper(worker)
    sweeper.tick()
    assert api.job(job_id)["state"] == "scheduled"
    while dt.datetime.now(dt.UTC) < soon:
        worker.draining.wait(0.05)
    sweeper.tick()
    assert api.job(job_id)["state"] == "queued"
    assert messages(worker) == [("later",)]
    assert keep_queue(worker, "later") == 1
    assert api.job(job_id)["state"] == "succeeded"
