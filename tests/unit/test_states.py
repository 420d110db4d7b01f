"""The transition table, and the retry backoff."""

from __future__ import annotations

import pytest

from service.states import ALLOWED_FROM, FINAL, WAITING, RetryPolicy, State


def test_every_state_is_reachable_and_final_states_only_leave_by_retry() -> None:
    assert set(ALLOWED_FROM) == set(State)
    for target, sources in ALLOWED_FROM.items():
        for source in sources & FINAL:
            assert target == State.QUEUED, f"{source} -> {target}"


def test_only_a_waiting_job_can_be_claimed() -> None:
    assert ALLOWED_FROM[State.RUNNING] == {State.QUEUED}
    assert ALLOWED_FROM[State.SUCCEEDED] == {State.RUNNING}
    assert ALLOWED_FROM[State.CANCELLED] == WAITING | {State.RUNNING}


@pytest.mark.parametrize(
    ("attempt", "low", "high"), [(1, 8, 12), (2, 16, 24), (3, 32, 48), (9, 80, 120)]
)
def test_backoff_doubles_with_jitter_up_to_the_cap(attempt: int, low: float, high: float) -> None:
    for _ in range(50):
        assert low <= RetryPolicy(base=10, cap=100).delay(attempt) <= high
