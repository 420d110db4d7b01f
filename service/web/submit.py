"""Creating jobs in batches: one thread per web process writes what the requests queue up.

`POST /jobs` hands its validated job to the Submitter and awaits the result. The Submitter's
thread takes every job waiting at that moment (up to MAX_BATCH), inserts them with one
statement and one commit, then sends their messages: under load, the statement, the commit and
the thread hop are shared by a batch; alone, a request is a batch of one. The rules are the
same as one at a time: a job is committed before its message is sent, and nothing is
half-written. A batch that fails, for whatever reason, is created again one job at a time, so
that a failure reaches only the request that caused it (a row the database refuses is that
request's 422); only a database outage fails them all (503). Jobs with an Idempotency-Key are
created one by one, since each may meet a key used before.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass

import structlog
from sqlalchemy.engine import Engine

from service import jobs
from service.dispatch import Dispatcher
from service.errors import DatabaseUnavailable, LockConflict
from service.jobs import JobSpec
from service.metrics import RECORDER
from service.queries import Job
from service.states import State

log = structlog.get_logger(__name__)

MAX_BATCH = 100
Result = tuple[Job, bool]
Outcome = Result | BaseException


@dataclass
class _Request:
    spec: JobSpec
    key: str | None
    future: asyncio.Future[Result]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Result], outcome: Result | BaseException) -> None:
    if future.done():  # the client went away
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class Submitter:
    def __init__(self, engine: Engine, dispatcher: Dispatcher) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="jobrunner-submit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Create what was asked for already, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    async def submit(self, spec: JobSpec, key: str | None) -> Result:
        """Create a job (the one created earlier with this key, if any): (job, created now)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.put(_Request(spec, key, future, loop))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                self._create(batch)
            except Exception:  # a bug: fail the batch, keep serving
                log.exception("job creation failed")

    def _create(self, batch: list[_Request]) -> None:
        outcomes: dict[int, Outcome] = {}
        plain = [request for request in batch if request.key is None]
        if plain:
            outcomes.update(self._create_plain(plain))
        for request in batch:
            if request.key is not None:
                try:
                    outcomes[id(request)] = jobs.create(self.engine, request.spec, request.key)
                except Exception as exc:
                    outcomes[id(request)] = exc
        ready_queues: set[str] = set()
        for outcome in outcomes.values():
            if isinstance(outcome, tuple) and outcome[1]:
                job = outcome[0]
                RECORDER.count("jobrunner_jobs_created", job.queue)
                if job.state == State.QUEUED:
                    ready_queues.add(job.queue)
        for name in sorted(ready_queues):  # after the commit: a worker must find the rows
            self.dispatcher.wake(name)  # one wake-up per queue: it fans out to idle threads
        for request in batch:
            request.loop.call_soon_threadsafe(_settle, request.future, outcomes[id(request)])

    def _create_plain(self, plain: list[_Request]) -> dict[int, Outcome]:
        """Jobs without a key: in one statement, or one by one if that fails."""
        try:
            created = jobs.create_many(self.engine, [request.spec for request in plain])
        except Exception as exc:
            if len(plain) == 1:
                return {id(plain[0]): exc}
            log.warning(
                "a batch of jobs failed; creating them one by one", size=len(plain), error=repr(exc)
            )
            return self._one_by_one(plain)
        return {id(request): (job, True) for request, job in zip(plain, created, strict=True)}

    def _one_by_one(self, plain: list[_Request]) -> dict[int, Outcome]:
        """Each job in a transaction of its own: one that fails fails its own request only.
        Once the database is found away, the rest fail with that outage at once (they would
        only wait for it, one after the other)."""
        outcomes: dict[int, Outcome] = {}
        outage: DatabaseUnavailable | None = None
        for request in plain:
            if outage is not None:
                outcomes[id(request)] = outage
                continue
            try:
                outcomes[id(request)] = jobs.create(self.engine, request.spec)
            except Exception as exc:
                outcomes[id(request)] = exc
                if isinstance(exc, DatabaseUnavailable) and not isinstance(exc, LockConflict):
                    outage = exc
        return outcomes
