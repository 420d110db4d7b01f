"""Waiting for a job to end, and following its output, for `submit --wait/--follow` and `wait`.

The output arrives as OutputChunks from `GET /jobs/{id}/output?follow=1`, a stream the server
ends when the job is final (or when it stops: then the client follows again from the byte it
has). OutputWriter writes every byte once, in order, whatever the chunks overlap.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import BinaryIO, TypeVar

from client.api import FINAL_STATES, ApiClient, ApiError, ClientError, Job, OutputChunk
from client.progress import Progress

T = TypeVar("T")
Note = Callable[[str], None]
#: how long a waiting client rides out a server that does not answer (a restart, say)
UNREACHABLE_GRACE_S = 60.0


class Pacer:
    """Pauses between polls: `first` after a change, growing up to `most` while nothing does."""

    def __init__(self, first: float = 0.3, factor: float = 1.5, most: float = 1.0) -> None:
        self.first, self.factor, self.most = first, factor, most
        self.delay = first

    def next(self, changed: bool) -> float:
        if changed:
            self.delay = self.first
        delay = self.delay
        self.delay = min(self.delay * self.factor, self.most)
        return delay


class OutputWriter:
    """Writes a job's output to `out` once, in order; says on `note` where some is missing."""

    def __init__(self, out: BinaryIO, note: Note, offset: int = 0) -> None:
        self.out, self.note = out, note
        self.offset = offset  # the next byte of the job's output to write
        self.ends_line = True  # whether what was written last ends a line

    def take(self, chunk: OutputChunk) -> bool:
        """Write what `chunk` holds beyond what was written; True if anything was."""
        if chunk.total < self.offset:
            self.note("the job's output started again from the beginning (it was retried)")
            self.offset = 0
            return False
        if chunk.offset > self.offset:
            self.note(
                f"{chunk.offset - self.offset} bytes of output skipped: "
                "the server keeps only the end of a job's output"
            )
            self.offset = chunk.offset
        data = chunk.data[self.offset - chunk.offset :]
        if not data:
            return False
        self.out.write(data)
        self.out.flush()
        self.offset += len(data)
        self.ends_line = data.endswith(b"\n")
        return True


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM while waiting (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def interrupts_raised() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted, so that the waiting client can cancel its job."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {
        signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends: a write and the offset that records
    it happen both or neither, so that a resumed wait neither repeats nor skips output."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Waiter:
    """Polls one job until it is final; with a writer, writes its new output as it comes."""

    def __init__(
        self,
        api: ApiClient,
        job_id: int,
        *,
        writer: OutputWriter | None,
        progress: Progress,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        grace: float = UNREACHABLE_GRACE_S,
    ) -> None:
        self.api, self.job_id, self.writer = api, job_id, writer
        self.progress = progress
        self.sleep, self.clock, self.grace = sleep, clock, grace

    def run(self) -> Job:
        """Wait until the job is final; return it as it ended."""
        if self.writer is None:
            for state in self._poll_states():
                self.progress.update(state)
        else:
            for chunk in self._stream_output():
                if chunk.data:
                    self.progress.clear()
                with interrupts_deferred():
                    self.writer.take(chunk)
                self.progress.output_written(self.writer.ends_line)
                self.progress.update(chunk.state)
        return self.call(self.api.job, self.job_id)

    def _poll_states(self) -> Iterator[str]:
        pacer, last = Pacer(first=0.2), ""
        while True:
            state = self.call(self.api.job, self.job_id)["state"]
            yield state
            if state in FINAL_STATES:
                return
            self.pause(pacer.next(state != last))
            last = state

    def _stream_output(self) -> Iterator[OutputChunk]:
        """Chunks of output, streamed, until the job is final; followed again after a break
        (a server restart, say), riding out a server that does not answer for `grace` s."""
        assert self.writer is not None
        failing_since: float | None = None
        pacer = Pacer(first=0.5, factor=2, most=5)
        while True:
            try:
                for chunk in self.api.follow(self.job_id, self.writer.offset):
                    failing_since = None
                    yield chunk
                state = self.api.job(self.job_id)["state"]
            except ClientError as exc:
                if not exc.transient:
                    raise
                now = self.clock()
                if failing_since is None:
                    failing_since = now
                    self.progress.note(f"{exc}; trying again for up to {self.grace:.0f}s")
                elif now - failing_since >= self.grace:
                    raise
                self.progress.update("(no answer from the server)")
                self.pause(pacer.next(False))
                continue
            if state in FINAL_STATES:  # what the stream may not have carried, then the end
                last = self.call(self.api.output, self.job_id, self.writer.offset)
                yield OutputChunk(last.offset, last.data, last.total, state)
                return
            self.pause(pacer.next(False))  # the server ended the stream early: it is stopping

    def _poll_output(self, offset: int) -> Iterator[OutputChunk]:
        """Chunks of output from `offset` on, polled, until one says the job is final."""
        pacer = Pacer()
        while True:
            chunk = self.call(self.api.output, self.job_id, offset)
            if not chunk.state:  # a server that does not say: ask the job itself
                chunk = OutputChunk(
                    chunk.offset,
                    chunk.data,
                    chunk.total,
                    self.call(self.api.job, self.job_id)["state"],
                )
            yield chunk
            if chunk.state in FINAL_STATES:
                return
            offset = 0 if chunk.total < offset else chunk.offset + len(chunk.data)
            self.pause(pacer.next(bool(chunk.data)))

    def call(self, method: Callable[..., T], *args: object) -> T:
        """Call the API, riding out a server that does not answer for up to `grace` seconds."""
        failing_since: float | None = None
        pacer = Pacer(first=0.5, factor=2, most=5)
        while True:
            try:
                return method(*args)
            except ClientError as exc:
                if not exc.transient:
                    raise
                now = self.clock()
                if failing_since is None:
                    failing_since = now
                    self.progress.note(f"{exc}; trying again for up to {self.grace:.0f}s")
                elif now - failing_since >= self.grace:
                    raise
                self.progress.update("(no answer from the server)")
                self.pause(pacer.next(False))

    def pause(self, seconds: float) -> None:
        """Sleep, keeping the spinner turning."""
        if not self.progress.enabled:
            self.sleep(seconds)
            return
        end = self.clock() + seconds
        while (left := end - self.clock()) > 0:
            self.progress.tick()
            self.sleep(min(left, 0.1))


def await_job(waiter: Waiter) -> tuple[Job | None, int | None]:
    """Wait for the job; on Ctrl-C (or SIGTERM) cancel it and wait for it to stop.

    Returns the final job (None if the client stopped waiting at a second Ctrl-C) and, when
    interrupted, the client's exit code 128 + signal (130 for Ctrl-C, 143 for SIGTERM).
    """
    job_id = waiter.job_id
    with interrupts_raised():
        try:
            return waiter.run(), None
        except Interrupted as exc:
            signum = exc.signum
        waiter.progress.clear()
        try:
            what = "interrupted" if signum == signal.SIGINT else "terminated"
            waiter.progress.note(f"{what}: cancelling job {job_id} (Ctrl-C again to stop waiting)")
            try:
                waiter.call(waiter.api.cancel, job_id)
            except ApiError as error:
                if error.status != 409:  # 409: it has ended already
                    raise
            return waiter.run(), 128 + signum
        except Interrupted:
            waiter.progress.clear()
            waiter.progress.note(f"stopped waiting: job {job_id} may still be stopping")
            return None, 128 + signum
