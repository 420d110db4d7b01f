"""Batched log lines (service.logbatch): whole, in order, on time, errors at once."""

from __future__ import annotations

import io
import logging
import threading

import structlog

from service import logs
from service.config import Settings
from service.logbatch import BatchedHandler, BatchedLineLogger, BatchedLines


class Target(io.StringIO):
    """A stream that keeps each write apart, as a pipe's reader sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.written = threading.Condition()

    def write(self, text: str) -> int:
        with self.written:
            self.writes.append(text)
            self.written.notify_all()
        return len(text)

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self.written:
            assert self.written.wait_for(lambda: len(self.writes) >= count, timeout), self.writes


def test_lines_written_together_go_out_as_one_write_in_order() -> None:
    target = Target()
    stream = BatchedLines(target, delay=0.2)
    logger = BatchedLineLogger(stream)
    for i in range(100):
        logger.info(f"line {i}")
    target.wait_for(1)
    assert target.writes == ["".join(f"line {i}\n" for i in range(100))]


def test_a_lone_line_goes_out_without_a_flush() -> None:
    target = Target()
    stream = BatchedLines(target, delay=0.01)
    BatchedLineLogger(stream).info("alone")
    target.wait_for(1)
    stream.write("later\n")  # a new batch after the first went out
    target.wait_for(2)
    assert target.writes == ["alone\n", "later\n"]


def test_a_warning_goes_out_at_once_after_the_lines_before_it() -> None:
    target = Target()
    stream = BatchedLines(target, delay=3600)  # nothing would go out by the timer
    logger = BatchedLineLogger(stream)
    logger.info("before")
    logger.warning("trouble")
    assert target.writes == ["before\ntrouble\n"]
    logger.debug("after")
    logger.error("worse")
    assert target.writes == ["before\ntrouble\n", "after\nworse\n"]


def test_a_stdlib_warning_goes_out_at_once() -> None:
    target = Target()
    stream = BatchedLines(target, delay=3600)
    handler = BatchedHandler(stream)
    record = logging.LogRecord("lib", logging.INFO, __file__, 1, "quiet", None, None)
    handler.emit(record)
    assert target.writes == []  # its handler's flush after the line does not undo the batch
    record = logging.LogRecord("lib", logging.WARNING, __file__, 1, "loud", None, None)
    handler.emit(record)
    assert target.writes == ["quiet\nloud\n"]


def test_lines_of_many_threads_are_each_written_once_and_whole() -> None:
    target = Target()
    stream = BatchedLines(target, delay=0.001)

    def write(thread: int) -> None:
        for i in range(200):
            stream.write(f"t{thread} {i}\n")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stream.flush_now()
    lines = "".join(target.writes).splitlines()
    assert sorted(lines) == sorted(f"t{t} {i}" for t in range(8) for i in range(200))
    for t in range(8):  # each thread's lines in the order it wrote them
        assert [line for line in lines if line.startswith(f"t{t} ")] == [
            f"t{t} {i}" for i in range(200)
        ]


def test_a_flush_after_the_target_closed_loses_nothing_else() -> None:
    target = io.StringIO()
    stream = BatchedLines(target, delay=3600)
    stream.write("late\n")
    target.close()
    stream.flush_now()  # the pipe of a stopping Dramatiq worker is closed: no error
    assert stream._pending == []


def test_configure_batched_sends_structlog_and_library_lines_through_one_stream() -> None:
    target = Target()
    stream = BatchedLines(target, delay=3600)
    logs._batched, saved = stream, logs._batched
    try:
        logs.configure(Settings(), process="worker", batched=True)
        structlog.get_logger("t").info("job finished", job_id=7)
        logging.getLogger("dramatiq").info("library line")
        assert target.writes == []
        logs.flush()
        lines = "".join(target.writes).splitlines()
        assert len(lines) == 2
        assert 'event="job finished"' in lines[0] and "job_id=7" in lines[0]
        assert "library line" in lines[1]
    finally:
        logs._batched = saved
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = []
