"""Log lines handed on in batches: for a process whose every write costs another process a
wake-up.

A Dramatiq worker process does not write to stderr: its `sys.stderr` is a pipe to the
`dramatiq` parent process, which sends each write as one message, and the parent's log thread
wakes, reads it and writes it out, one line at a time. A worker writes two lines per job, and
that relay was ~7% of the worker role's CPU (0.07 s a second at ~500 jobs/s, measured).
Lines that come within BATCH_DELAY_S of each other go as one message instead, still whole and
in the order they were written (one writer thread, everything pending at once).

A warning or an error is handed on at once, with everything before it (`write_now`), and so is
whatever is pending when the process stops (`flush_now`, called at the worker's shutdown and
at exit): only a process killed outright can lose lines, those of its last BATCH_DELAY_S.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from typing import TextIO

#: how long a line may wait for others to go with it
BATCH_DELAY_S = 0.05


class BatchedLines:
    """A text stream that writes to `target` in batches (see the module docstring)."""

    def __init__(self, target: TextIO, delay: float = BATCH_DELAY_S) -> None:
        self.target = target
        self.delay = delay
        self._pending: list[str] = []
        self._pending_lock = threading.Lock()
        #: held while a batch is written, so that batches go out in the order they were taken
        self._send_lock = threading.Lock()
        self._arrived = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-batches", daemon=True)
        self._thread.start()
        atexit.register(self.flush_now)

    def write(self, text: str) -> int:
        with self._pending_lock:
            self._pending.append(text)
            first = len(self._pending) == 1
        if first:
            self._arrived.set()
        return len(text)

    def write_now(self, text: str) -> None:
        """Write `text` and everything before it at once."""
        self.write(text)
        self.flush_now()

    def flush(self) -> None:
        """Nothing: a log handler flushes after each line, which would undo the batching."""

    def flush_now(self) -> None:
        """Write everything pending (quietly dropped if the target is closed already)."""
        with self._send_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if batch:
                with contextlib.suppress(OSError, ValueError):
                    self.target.write("".join(batch))
                    self.target.flush()

    def _run(self) -> None:
        while True:
            self._arrived.wait()
            self._arrived.clear()
            time.sleep(self.delay)  # let the lines that follow closely join this batch
            self.flush_now()


class BatchedLineLogger:
    """structlog's logger for a BatchedLines stream (WriteLogger's interface): info and debug
    lines are batched, warnings and errors written at once."""

    def __init__(self, stream: BatchedLines) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        self._stream.write(message + "\n")

    def urgent(self, message: str) -> None:
        self._stream.write_now(message + "\n")

    log = debug = info = msg
    warn = warning = err = error = critical = exception = fatal = failure = urgent


class BatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stdlib handler for a BatchedLines stream: a record at WARNING or above is written
    at once, with every line before it."""

    def __init__(self, stream: BatchedLines) -> None:
        super().__init__(stream)
        self.batched = stream

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.batched.flush_now()
