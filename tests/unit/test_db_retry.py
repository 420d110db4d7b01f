"""service.db.retry_conflicts: which failures run a transaction again, and how often."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from service import db
from service.errors import DatabaseUnavailable, LockConflict


def failing(*errors: BaseException, fenced: bool = False) -> tuple[list[int], object]:
    """A function that raises `errors` in turn, then returns how many calls it took."""
    calls: list[int] = []

    @(db.retry_fenced if fenced else db.retry_conflicts)
    def write() -> int:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return len(calls)

    return calls, write


def unavailable(dropped: bool) -> DatabaseUnavailable:
    error = DatabaseUnavailable()
    error.__cause__ = sa.exc.OperationalError(
        "UPDATE jobs ...", {}, Exception("server has gone away"), connection_invalidated=dropped
    )
    return error


def test_a_deadlock_runs_the_transaction_again() -> None:
    _, write = failing(LockConflict(), LockConflict())
    assert write() == 3  # type: ignore[operator]


def test_a_conflict_that_persists_escapes_after_a_few_runs() -> None:
    calls, write = failing(*[LockConflict() for _ in range(db.CONFLICT_ATTEMPTS)])
    with pytest.raises(LockConflict):
        write()  # type: ignore[operator]
    assert len(calls) == db.CONFLICT_ATTEMPTS


def test_a_fenced_write_is_tried_once_more_at_once_on_a_dropped_connection() -> None:
    _, write = failing(unavailable(dropped=True), fenced=True)
    assert write() == 2  # type: ignore[operator]
    calls, write = failing(unavailable(dropped=True), unavailable(dropped=True), fenced=True)
    with pytest.raises(DatabaseUnavailable):
        write()  # type: ignore[operator]
    assert len(calls) == 2


def test_other_writes_are_not_run_again_on_a_dropped_connection() -> None:
    # the commit may have happened: an insert or a claim run again would do its work twice
    calls, write = failing(unavailable(dropped=True))
    with pytest.raises(DatabaseUnavailable):
        write()  # type: ignore[operator]
    assert len(calls) == 1


def test_an_outage_is_left_to_the_caller() -> None:
    calls, write = failing(unavailable(dropped=False), fenced=True)
    with pytest.raises(DatabaseUnavailable):
        write()  # type: ignore[operator]
    assert len(calls) == 1


def test_lock_conflicts_are_told_from_outages() -> None:
    def error(code: int) -> sa.exc.OperationalError:
        return sa.exc.OperationalError("SELECT 1", {}, Exception(code, "..."))

    assert db.is_lock_conflict(error(1213)) and db.is_lock_conflict(error(1205))
    assert not db.is_lock_conflict(error(2006))
