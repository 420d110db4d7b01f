"""Live output of a running attempt: published as the command prints it.

Chunks are gathered as the runner reads them and published once per wake-up of its loop (at
most one message per read batch, so a flood of output costs a bounded number of messages). A
follow request (a web process that just subscribed) is answered with the kept tail from the
offset it asks for: the follower drops what it has seen already, byte offsets tell.

Nothing is published for a job that nobody follows: a follower's request marks the job as
followed in every worker process (actors.context.RunningJobs.follow), whether it runs there
already or starts later, and a follower that waits repeats its request now and then.

A job publishes at most `LIVE_BYTES_PER_S` (bursts up to `LIVE_BURST_BYTES`): a command that
prints as fast as the pipe goes would otherwise push hundreds of MB/s through Redis to every
web process, whose subscriber connection Redis then drops (its pub/sub output buffer limit),
costing every follower of every job its lines. What is over the budget is not published: the
followers see a hole in the byte offsets and fill it from the stored output (service.web.follow).
"""

from __future__ import annotations

import threading
import time

from actors.output import OutputTail
from service.dispatch import Dispatcher, attempt_end, output_chunk

LIVE_BYTES_PER_S = 1024 * 1024
LIVE_BURST_BYTES = 1024 * 1024


class Budget:
    """A token bucket of bytes: `rate` per second, at most `burst` saved up; thread-safe (the
    runner's thread flushes, a follow request's thread replays)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()
        self._lock = threading.Lock()

    def take(self, amount: int) -> bool:
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if amount > self.tokens:
                return False
            self.tokens -= amount
            return True


class LivePublisher:
    def __init__(self, dispatcher: Dispatcher, job_id: int) -> None:
        self.dispatcher = dispatcher
        self.job_id = job_id
        self.budget = Budget(LIVE_BYTES_PER_S, LIVE_BURST_BYTES)
        #: bytes not published for want of budget (followers read them from the database)
        self.withheld = 0
        self.tail: OutputTail | None = None
        #: set once a follower asked for this job's output (see RunningJobs.follow)
        self.followed = False
        self._pending_offset = 0
        self._pending: list[bytes] = []
        self._lock = threading.Lock()

    def on_chunk(self, offset: int, chunk: bytes) -> None:
        """OutputTail's listener: called with each chunk as it is read."""
        if not self.followed:  # a follower's replay, taken from the tail, will include it
            return
        with self._lock:
            if not self._pending:
                self._pending_offset = offset
            self._pending.append(chunk)

    def flush(self) -> None:
        with self._lock:
            if not self._pending:
                return
            offset, data = self._pending_offset, b"".join(self._pending)
            self._pending.clear()
        self._publish(offset, data)

    def _publish(self, offset: int, data: bytes) -> None:
        if not self.budget.take(len(data)):
            self.withheld += len(data)
            return
        self.dispatcher.publish_output(self.job_id, output_chunk(offset, data))

    def replay(self, offset: int) -> None:
        """Publish the kept output from byte `offset` (or from the oldest byte kept)."""
        self.followed = True
        if self.tail is None:
            return
        snapshot = self.tail.snapshot()
        start = max(offset, snapshot.offset)
        if start < snapshot.total:
            self._publish(start, snapshot.data[start - snapshot.offset :])

    def end(self, state: str, exit_code: int | None = None, last_error: str | None = None) -> None:
        if not self.followed:
            return
        self.flush()
        self.dispatcher.publish_output(self.job_id, attempt_end(state, exit_code, last_error))
