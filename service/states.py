"""The job states, which are final, and which transitions between them are allowed.

`service.jobs` is the only module that writes a state, and it checks every write against
`ALLOWED_FROM`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    SCHEDULED = "scheduled"  # waits for its run_at
    QUEUED = "queued"  # waits for a worker
    RUNNING = "running"  # an attempt runs now
    RETRYING = "retrying"  # the last attempt failed; the next waits for its backoff
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StopReason(StrEnum):
    """Why a worker stops a command before it ends by itself."""

    CANCELLED = "cancelled"  # a client cancelled (or deleted) the job
    LOST = "lost"  # the attempt is no longer this worker's: the sweeper gave it up
    SHUTDOWN = "shutdown"  # the worker stops: the job goes back to its queue
    LOST_CONTACT = "lost contact"  # the database has not confirmed it for too long


class EndReason(StrEnum):
    """How an attempt ended, for programs (API.md section 2, `end_reason`)."""

    EXITED = "exited"  # by itself, with an exit code
    SIGNAL = "signal"  # killed by a signal from outside
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    WORKER_LOST = "worker_lost"  # its worker died or lost contact with the database
    NOT_STARTED = "not_started"  # the command could not start


FINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
WAITING = frozenset({State.SCHEDULED, State.QUEUED, State.RETRYING})
NOT_STARTED = frozenset({State.SCHEDULED, State.QUEUED})

#: target state -> the states it may be entered from
ALLOWED_FROM: Mapping[State, frozenset[State]] = {
    State.SCHEDULED: frozenset({State.SCHEDULED, State.QUEUED}),  # edit of run_at
    State.QUEUED: frozenset(
        {
            State.SCHEDULED,  # run_at reached
            State.QUEUED,  # edit
            State.RETRYING,  # backoff over
            State.RUNNING,  # handed back by a worker that shuts down
            State.FAILED,  # retry by a client
            State.CANCELLED,  # retry by a client
        }
    ),
    State.RUNNING: frozenset({State.QUEUED}),
    State.RETRYING: frozenset({State.RUNNING}),
    State.SUCCEEDED: frozenset({State.RUNNING}),
    State.FAILED: frozenset({State.RUNNING}),
    State.CANCELLED: frozenset({State.SCHEDULED, State.QUEUED, State.RETRYING, State.RUNNING}),
}


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: `base` seconds after the first failed attempt, doubling, capped;
    or, with `delayed_job`, the original's: attempts^4 + 5 seconds (6 s, 21 s, 86 s, ...: 25
    attempts span about 20 days), with no jitter and no cap."""

    base: float
    cap: float
    delayed_job: bool = False

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (1-based), with ±20 % jitter."""
        if self.delayed_job:
            return float(attempt**4 + 5)
        return min(self.cap, self.base * 2.0 ** (attempt - 1)) * random.uniform(0.8, 1.2)


@dataclass(frozen=True)
class Retention:
    """How long final jobs (and their output) are kept, in seconds, by how they ended;
    0 deletes a job as soon as it ends that way (as delayed_job deleted succeeded jobs)."""

    succeeded: float
    failed: float
    cancelled: float

    def of(self, state: State) -> float:
        return {
            State.SUCCEEDED: self.succeeded,
            State.FAILED: self.failed,
            State.CANCELLED: self.cancelled,
        }[state]

    def at_once(self, state: State) -> bool:
        """Whether a job that has just become `state` is deleted there and then."""
        return state in FINAL and self.of(state) == 0
