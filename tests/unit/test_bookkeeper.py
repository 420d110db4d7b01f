"""The combining of actors.bookkeeper: ends recorded at the same time share one write, each
thread gets its own result, and one bad end does not take the others with it. (The write
itself, on a real database, is tests/integration/test_end_attempts.py.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from actors.bookkeeper import Bookkeeper, Recorded
from service.config import Settings
from service.errors import DatabaseUnavailable
from service.jobs import AttemptEnd
from service.states import State

DEADLINE_S = 30.0


def _end(job_id: int) -> AttemptEnd:
    """Only the job's id matters to these writers."""
    job: Any = type("Job", (), {"id": job_id})()
    return AttemptEnd(job=job, outcome=None, output=None)  # type: ignore[arg-type]


class _Writer(Bookkeeper):
    """A bookkeeper whose write keeps the batches it gets; the first one waits for `release`."""

    def __init__(self, fail: set[int] | None = None, outage: bool = False) -> None:
        super().__init__(engine=None, settings=Settings())  # type: ignore[arg-type]
        self.batches_seen: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = fail or set()
        self.outage = outage

    def _write(self, ends: list[AttemptEnd]) -> list[Recorded]:
        ids = [end.job.id for end in ends]
        self.batches_seen.append(ids)
        if len(self.batches_seen) == 1:
            self.entered.set()
            assert self.release.wait(DEADLINE_S)
        if self.outage:
            raise DatabaseUnavailable()
        if self.fail & set(ids):
            raise ValueError(f"refused: {sorted(self.fail & set(ids))}")
        return [(State.SUCCEEDED, None) for _ in ids]


def _record_all(books: _Writer, first: int, others: list[int]) -> dict[int, Any]:
    """Record `first` (whose write blocks), then `others` while it does; what each got."""
    results: dict[int, Any] = {}

    def record(job_id: int) -> None:
        try:
            results[job_id] = books.record(_end(job_id))
        except BaseException as exc:  # an interruption too
            results[job_id] = exc

    leader = threading.Thread(target=record, args=(first,))
    leader.start()
    assert books.entered.wait(DEADLINE_S)
    waiters = [threading.Thread(target=record, args=(job_id,)) for job_id in others]
    for thread in waiters:
        thread.start()
    # every waiter has queued its end behind the blocked write before it goes on
    deadline = threading.Event()
    for _ in range(int(DEADLINE_S * 100)):
        with books._lock:
            if len(books._pending) == len(others):
                break
        deadline.wait(0.01)
    books.release.set()
    for thread in [leader, *waiters]:
        thread.join(DEADLINE_S)
        assert not thread.is_alive()
    return results


def test_ends_that_arrive_during_a_write_share_the_next_one() -> None:
    books = _Writer()
    results = _record_all(books, 1, [2, 3, 4])
    assert books.batches_seen[0] == [1]
    assert sorted(books.batches_seen[1]) == [2, 3, 4]
    assert len(books.batches_seen) == 2
    assert results == {job_id: (State.SUCCEEDED, None) for job_id in (1, 2, 3, 4)}
    assert (books.ends, books.batches) == (4, 2)


def test_a_lone_end_is_written_at_once_by_its_own_thread() -> None:
    books = _Writer()
    books.release.set()
    assert books.record(_end(9)) == (State.SUCCEEDED, None)
    assert books.batches_seen == [[9]]


def test_an_end_the_database_refuses_does_not_take_the_others_with_it() -> None:
    books = _Writer(fail={3})
    results = _record_all(books, 1, [2, 3, 4])
    assert results[1] == results[2] == results[4] == (State.SUCCEEDED, None)
    assert isinstance(results[3], ValueError)
    # the batch of three failed, then each was written alone
    assert sorted(books.batches_seen[1]) == [2, 3, 4]
    assert sorted(map(tuple, books.batches_seen[2:])) == [(2,), (3,), (4,)]


def test_an_outage_reaches_every_thread_of_the_batch_as_its_own_error() -> None:
    books = _Writer(outage=True)
    results = _record_all(books, 1, [2, 3])
    errors = [results[job_id] for job_id in (1, 2, 3)]
    assert all(isinstance(error, DatabaseUnavailable) for error in errors)
    assert len({id(error) for error in errors}) == 3  # each thread raises its own


def test_a_write_interrupted_midway_leaves_no_thread_waiting() -> None:
    class Interrupted(BaseException):
        pass

    class _Interrupting(_Writer):
        def _write(self, ends: list[AttemptEnd]) -> list[Recorded]:
            if len(self.batches_seen) == 1:  # the second batch: the one of the waiters
                self.batches_seen.append([end.job.id for end in ends])
                raise Interrupted()
            return super()._write(ends)

    books = _Interrupting()
    results = _record_all(books, 1, [2, 3])
    interrupted = [job_id for job_id in (2, 3) if isinstance(results[job_id], Interrupted)]
    unavailable = [job_id for job_id in (2, 3) if isinstance(results[job_id], DatabaseUnavailable)]
    # the thread that was writing sees its interruption; the other is told to write again
    assert len(interrupted) == 1 and len(unavailable) == 1
    assert results[1] == (State.SUCCEEDED, None)


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = threading.active_count()
    yield
    assert threading.active_count() == before
