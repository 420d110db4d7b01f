"""The ends of attempts that the threads of one worker process reach at about the same time are
recorded together: one transaction, one commit, and one search of each queue for the jobs that
come next (service.jobs.end_attempts).

Flat combining, no timer: a thread that ends an attempt adds it to the pending ends; if no
thread of the process is recording at that moment, it records every pending end itself, its
own included; otherwise it waits for the thread that is, and then either finds its end recorded
by the next batch's recorder or becomes that recorder. A lone end is recorded at once; ends pile
up only while the database is busy with the last batch, which is when sharing a transaction
pays (on 2 cores at ~500 jobs/s, most batches hold 2-4 ends).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import structlog
from sqlalchemy.engine import Engine

from service import jobs
from service.config import Settings
from service.errors import DatabaseUnavailable
from service.jobs import AttemptEnd, ClaimedJob
from service.states import Retention, RetryPolicy, State

log = structlog.get_logger(__name__)

Recorded = tuple[State | None, ClaimedJob | None]


@dataclass
class _Pending:
    end: AttemptEnd
    result: Recorded | None = None
    error: BaseException | None = None
    #: set once its end is recorded, or when its thread is to record the next batch
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def outcome(self) -> Recorded:
        if self.error is not None:
            raise _again(self.error)
        assert self.result is not None
        return self.result


class Bookkeeper:
    """Records the ends of attempts (and claims the next jobs) of one worker process."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._pending: list[_Pending] = []
        self._recording = False
        self._lock = threading.Lock()
        #: how many ends were recorded, in how many transactions (logged as the worker stops)
        self.ends = self.batches = 0

    def record(self, end: AttemptEnd) -> Recorded:
        """`jobs.finish_and_claim` (or `jobs.finish`, without `end.then`), shared with the ends
        that other threads of this process record at the same time. Each waiting thread is
        woken once: when its end is recorded, or when it is its turn to record."""
        mine = _Pending(end)
        with self._lock:
            self._pending.append(mine)
            leading = not self._recording
            self._recording = True
        if not leading:
            mine.ready.wait()
            if mine.done:
                return mine.outcome()
        with self._lock:
            batch, self._pending = self._pending, []
        try:
            self._record(batch)
        finally:
            with self._lock:
                if self._pending:
                    self._pending[0].ready.set()  # its thread records the next batch
                else:
                    self._recording = False
            for pending in batch:
                if not pending.done and pending is not mine:
                    # the write was interrupted (the worker is stopping): each thread records
                    # its end again on its own, as after an outage
                    pending.error = DatabaseUnavailable()
                pending.ready.set()
        return mine.outcome()

    def _record(self, batch: list[_Pending]) -> None:
        try:
            results = self._write([pending.end for pending in batch])
        except DatabaseUnavailable as exc:
            for pending in batch:
                pending.error = exc
            return
        except Exception:
            if len(batch) == 1:
                raise
            # an end the database refuses must not take the others with it: one by one
            log.exception("recording a batch of ends failed; recording them one by one")
            for pending in batch:
                try:
                    pending.result = self._write([pending.end])[0]
                except Exception as exc:
                    pending.error = exc
            return
        for pending, result in zip(batch, results, strict=True):
            pending.result = result
        self.ends += len(batch)
        self.batches += 1

    def record_alone(self, end: AttemptEnd) -> State | None:
        """`jobs.finish` of one end, shared with no other and with no claim: a try after one
        that failed (actors.execution), run again on a dropped connection."""
        return jobs.finish(self.engine, end.job, end.outcome, end.output, *self._rules())

    def _write(self, ends: list[AttemptEnd]) -> list[Recorded]:
        return jobs.end_attempts(self.engine, ends, *self._rules())

    def _rules(self) -> tuple[RetryPolicy, Retention, str | None]:
        """How this deployment ends attempts: its retries, retention and callback for all."""
        settings = self.settings
        return settings.retry_policy, settings.retention_policy, settings.callback_url or None


def _again(error: BaseException) -> BaseException:
    """The error of a batch, for each of its threads to raise: a DatabaseUnavailable of its own
    (one exception object raised in several threads would share a traceback)."""
    if isinstance(error, DatabaseUnavailable):
        fresh = DatabaseUnavailable()
        fresh.__cause__ = error.__cause__
        return fresh
    return error
