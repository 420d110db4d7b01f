"""What a waiting client shows on stderr: a spinner on terminals, one-line notes everywhere.

The spinner line (`⠹ job 42 running 0:12`) is drawn only when stderr is a terminal, and is
erased before anything else is written, so that piped or logged output holds nothing of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

FRAMES_UNICODE = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
FRAMES_ASCII = "|/-\\"
ERASE_LINE = "\r\x1b[K"


def elapsed_text(seconds: float) -> str:
    """`0:07`, `12:34`, `1:02:03`."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(frame: str, job_id: int, state: str, seconds: float) -> str:
    return f"{frame} job {job_id} {state} {elapsed_text(seconds)}"


class Progress:
    """The spinner of one job, and the notes that interrupt it."""

    def __init__(
        self,
        stream: TextIO,
        job_id: int,
        *,
        enabled: bool,
        shares_terminal: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.job_id, self.enabled = stream, job_id, enabled
        self.shares_terminal = shares_terminal  # the job's output goes to the same terminal
        self.clock = clock
        self.started = clock()
        self.state = ""
        self.frames = FRAMES_UNICODE if _can_encode(stream, FRAMES_UNICODE) else FRAMES_ASCII
        self.frame = 0
        self.drawn = False
        self.line_open = False  # the output's last line is unfinished: do not draw over it

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def update(self, state: str) -> None:
        self.state = state
        self.tick()

    def tick(self) -> None:
        if not self.enabled or self.line_open or not self.state:
            return
        self.frame = (self.frame + 1) % len(self.frames)
        line = progress_line(self.frames[self.frame], self.job_id, self.state, self.elapsed)
        self.stream.write(ERASE_LINE + line)
        self.stream.flush()
        self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            self.stream.write(ERASE_LINE)
            self.stream.flush()
            self.drawn = False

    def output_written(self, ends_line: bool) -> None:
        self.line_open = self.shares_terminal and not ends_line

    def note(self, text: str) -> None:
        """A line on stderr, whether or not it is a terminal: `jobrunner: <text>`."""
        self.clear()
        if self.enabled and self.line_open:
            self.stream.write("\n")
            self.line_open = False
        self.stream.write(f"jobrunner: {text}\n")
        self.stream.flush()

    def finish(self, text: str) -> None:
        """The last line on a terminal (`job 42 succeeded in 0:12`); nothing when piped."""
        self.clear()
        if self.enabled:
            if self.line_open:
                self.stream.write("\n")
            self.stream.write(f"{text} in {elapsed_text(self.elapsed)}\n")
            self.stream.flush()


def _can_encode(stream: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
