"""What a worker process shares between its threads: settings, engine, broker, running jobs."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from dramatiq import Broker
from sqlalchemy.engine import Engine

from actors.bookkeeper import Bookkeeper
from actors.containment import Containment, SubreaperContainment
from actors.reaper import DEV_PREFIX
from service.config import Settings
from service.dispatch import Dispatcher
from service.job_user import JobUser
from service.jobs import ClaimedJob
from service.states import StopReason


class LiveOutput(Protocol):
    """The live output of an attempt (actors.live.LivePublisher): published only while
    someone follows the job."""

    followed: bool

    def replay(self, offset: int) -> None:
        """Publish the output from byte `offset`, for a follower that just arrived."""


#: how long a follow request is remembered for a job that does not run here yet (a follower
#: that waits for a queued job), and how many such jobs at most
FOLLOW_MEMORY_S = 3600.0
FOLLOW_MEMORY_MAX = 10_000


@dataclass
class RunningAttempt:
    job: ClaimedJob
    stop_reason: StopReason | None = None
    live: LiveOutput | None = None
    #: when the database last confirmed that this attempt is still ours (monotonic clock)
    confirmed_at: float = field(default_factory=time.monotonic)
    #: its command has ended and its end is being recorded: there is nothing left to stop
    finishing: bool = False


class RunningJobs:
    """The attempts running in this process, and the requests to stop them."""

    def __init__(self) -> None:
        self._attempts: dict[int, RunningAttempt] = {}
        #: job id -> (until when a follow request for it is remembered (monotonic clock), the
        #: byte offset the follower asked for)
        self._followed: OrderedDict[int, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, job: ClaimedJob, live: LiveOutput | None = None) -> None:
        with self._lock:
            self._attempts[job.id] = RunningAttempt(job, live=live)
            until, offset = self._followed.get(job.id, (0.0, 0))
            followed = live is not None and until > time.monotonic()
            if followed and live is not None:
                live.followed = True
        if followed and live is not None:
            # what earlier attempts printed since the follower's offset (it may not have
            # heard their end), then this attempt's output as it comes
            live.replay(offset)

    def follow(self, job_id: int, offset: int) -> None:
        """A follower of this job asked for its output from byte `offset`: from now on the
        job's live output is published, here or, if it starts later, wherever it runs."""
        with self._lock:
            self._followed[job_id] = (time.monotonic() + FOLLOW_MEMORY_S, offset)
            self._followed.move_to_end(job_id)
            while len(self._followed) > FOLLOW_MEMORY_MAX:
                self._followed.popitem(last=False)
            attempt = self._attempts.get(job_id)
            live = attempt.live if attempt is not None else None
            if live is not None:
                live.followed = True
        if live is not None:
            live.replay(offset)

    def remove(self, job_id: int) -> None:
        with self._lock:
            self._attempts.pop(job_id, None)

    def leases(self) -> dict[int, int]:
        with self._lock:
            return {job_id: a.job.lease for job_id, a in self._attempts.items()}

    def confirm(self, job_ids: Iterable[int], at: float) -> None:
        """The database accepted a heartbeat of these attempts at `at`."""
        with self._lock:
            for job_id in job_ids:
                attempt = self._attempts.get(job_id)
                if attempt is not None:
                    attempt.confirmed_at = max(attempt.confirmed_at, at)

    def unconfirmed_since(self, before: float) -> list[int]:
        """The attempts the database has not confirmed since `before`."""
        with self._lock:
            return [job_id for job_id, a in self._attempts.items() if a.confirmed_at < before]

    def mark_finishing(self, job_id: int) -> None:
        """The command of this attempt has ended: stop requests no longer apply to it (a
        heartbeat that reads the row after its end was stored sees a job that is no longer
        running, which is no sign of a lost attempt)."""
        with self._lock:
            attempt = self._attempts.get(job_id)
            if attempt is not None:
                attempt.finishing = True

    def request_stop(self, job_id: int, reason: StopReason) -> bool:
        """Ask the attempt of this job to stop; True if its command runs here and was not asked
        to stop before."""
        with self._lock:
            attempt = self._attempts.get(job_id)
            if attempt is None or attempt.stop_reason is not None or attempt.finishing:
                return False
            attempt.stop_reason = reason
            return True

    def stop_reason(self, job_id: int) -> StopReason | None:
        attempt = self._attempts.get(job_id)
        return attempt.stop_reason if attempt is not None else None

    def __len__(self) -> int:
        return len(self._attempts)


def worker_name(*, dev: bool = False) -> str:
    """`host:pid` as `locked_by` shows it, or `host:dev-pid` for `jobrunner dev`.

    The prefix also keeps older reapers, which take any pid not of a Dramatiq process for a
    dead worker's, away from the commands of a dev process on the same host.
    """
    return f"{socket.gethostname()}:{DEV_PREFIX if dev else ''}{os.getpid()}"


#: shares of the lease timeout: the self-fence, and its SIGTERM grace (see actors/presence.py)
FENCE_SHARE = 0.5
FENCE_GRACE_SHARE = 1 / 6


@dataclass
class WorkerContext:
    settings: Settings
    engine: Engine
    broker: Broker
    dispatcher: Dispatcher
    running: RunningJobs = field(default_factory=RunningJobs)
    name: str = field(default_factory=worker_name)
    #: set when the worker stops taking jobs; running ones get until `shutdown_deadline`
    draining: threading.Event = field(default_factory=threading.Event)
    shutdown_deadline: float = float("inf")
    stopped: threading.Event = field(default_factory=threading.Event)
    #: where each command and everything it starts are kept (actors.containment)
    containment: Containment = field(default_factory=SubreaperContainment)
    #: the user commands run as (JOBRUNNER_JOB_USER); None: this process's own
    job_user: JobUser | None = None
    #: records the ends of attempts, several threads' at a time (actors.bookkeeper)
    bookkeeper: Bookkeeper = field(init=False)

    def __post_init__(self) -> None:
        self.bookkeeper = Bookkeeper(self.engine, self.settings)

    @property
    def fence_after(self) -> float:
        """How long without a confirmation from the database before this process stops its
        commands itself (actors/presence.py has the timing argument)."""
        return self.settings.lease_timeout * FENCE_SHARE

    def kill_grace(self, reason: str) -> float:
        """The SIGTERM grace of a command stopped for `reason`: shorter for the self-fence, which
        must have the command gone well before the lease runs out."""
        if reason == StopReason.LOST_CONTACT:
            return min(self.settings.kill_grace, self.settings.lease_timeout * FENCE_GRACE_SHARE)
        return self.settings.kill_grace

    def begin_shutdown(self) -> None:
        self.shutdown_deadline = time.monotonic() + self.settings.shutdown_grace
        self.draining.set()

    def stop_reason(self, job_id: int) -> StopReason | None:
        """Why the attempt of this job must stop now, if it must."""
        reason = self.running.stop_reason(job_id)
        if reason is None and self.draining.is_set() and time.monotonic() >= self.shutdown_deadline:
            return StopReason.SHUTDOWN
        return reason
