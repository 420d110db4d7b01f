"""Waiting and following against a scripted server (httpx.MockTransport) and a fake clock."""

from __future__ import annotations

import io
import signal

import httpx
import pytest

from client.api import ApiClient, OutputChunk, Unreachable
from client.progress import ERASE_LINE, Progress, elapsed_text
from client.wait import Interrupted, OutputWriter, Pacer, Waiter, await_job


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ScriptedJob:
    """Job 1 as the server shows it: one step per output read (the last one stays)."""

    def __init__(self, steps: list[tuple[bytes, int, str]]) -> None:
        self.steps = steps  # (whole output so far, bytes dropped from its head, state)
        self.reads = 0
        self.requests: list[str] = []
        self.cancelled = False
        self.honours_cancel = True  # False: the command takes its time to stop
        self.fail_next = 0  # how many of the next requests find no server

    @property
    def step(self) -> tuple[bytes, int, str]:
        whole, dropped, state = self.steps[min(self.reads, len(self.steps) - 1)]
        return whole, dropped, "cancelled" if self.cancelled else state

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}?{request.url.query.decode()}")
        if self.fail_next:
            self.fail_next -= 1
            raise httpx.ConnectError("[Errno 111] Connection refused")
        whole, dropped, state = self.step
        if request.url.path == "/jobs/1/cancel":
            self.cancelled = self.honours_cancel
            return httpx.Response(202, json={"id": 1, "state": "running"})
        if request.url.path == "/jobs/1":
            exit_code = 0 if state == "succeeded" else None
            return httpx.Response(200, json={"id": 1, "state": state, "exit_code": exit_code})
        self.reads += 1
        start = max(int(request.url.params.get("offset", 0)), dropped)
        headers = {
            "X-Output-Offset": str(start),
            "X-Output-Bytes": str(len(whole)),
            "X-Job-State": state,
        }
        return httpx.Response(200, content=whole[start:], headers=headers)


def waiter_for(
    job: ScriptedJob, follow: bool = True, grace: float = 60
) -> tuple[Waiter, io.BytesIO, io.StringIO]:
    out, err, fake = io.BytesIO(), io.StringIO(), FakeTime()
    progress = Progress(err, 1, enabled=False, clock=fake.clock)
    writer = OutputWriter(out, progress.note) if follow else None
    api = ApiClient("http://jobs.test", transport=httpx.MockTransport(job.handler))
    waiter = Waiter(
        api, 1, writer=writer, progress=progress, sleep=fake.sleep, clock=fake.clock, grace=grace
    )
    return waiter, out, err


def test_the_pacer_backs_off_while_nothing_changes() -> None:
    pacer = Pacer(first=0.3, factor=2, most=1.0)
    assert [pacer.next(False) for _ in range(4)] == [0.3, 0.6, 1.0, 1.0]
    assert pacer.next(True) == 0.3


def test_the_writer_writes_each_byte_once_whatever_the_chunks_overlap() -> None:
    out, notes = io.BytesIO(), []
    writer = OutputWriter(out, notes.append)
    for chunk in [
        OutputChunk(0, b"hel", 3, "running"),
        OutputChunk(0, b"hello", 5, "running"),  # a source that sends from the start again
        OutputChunk(5, b"", 5, "running"),
        OutputChunk(3, b"lo wor", 9, "running"),
        OutputChunk(9, b"ld\n", 12, "succeeded"),
    ]:
        writer.take(chunk)
    assert out.getvalue() == b"hello world\n"
    assert notes == [] and writer.ends_line


def test_the_writer_says_when_the_head_of_the_output_was_dropped() -> None:
    out, notes = io.BytesIO(), []
    writer = OutputWriter(out, notes.append)
    writer.take(OutputChunk(0, b"abc", 3, "running"))
    writer.take(OutputChunk(5, b"fgh", 8, "running"))
    assert out.getvalue() == b"abcfgh"
    assert notes == ["2 bytes of output skipped: the server keeps only the end of a job's output"]
    assert not writer.ends_line


def test_following_streams_again_from_where_it_is_after_a_break_and_ends_with_the_job() -> None:
    # each scripted answer is a follow stream the server ended early (as a stopping server
    # does); the last read, once the job is final, is a plain one
    job = ScriptedJob(
        [
            (b"", 0, "queued"),
            (b"one\n", 0, "running"),
            (b"one\n", 0, "running"),
            (b"one\ntw", 0, "running"),
            (b"one\ntwo\nthree\n", 0, "succeeded"),
        ]
    )
    waiter, out, err = waiter_for(job)
    assert waiter.run()["state"] == "succeeded"
    assert out.getvalue() == b"one\ntwo\nthree\n"
    assert err.getvalue() == ""
    offsets = [r.rsplit("?", 1)[1] for r in job.requests if "/output" in r]
    assert offsets == [
        "follow=1&offset=0",
        "follow=1&offset=0",
        "follow=1&offset=4",
        "follow=1&offset=4",
        "offset=6",
    ]


def test_following_notes_output_dropped_between_two_reads() -> None:
    job = ScriptedJob([(b"abc", 0, "running"), (b"abcdefgh", 5, "failed")])
    waiter, out, err = waiter_for(job)
    waiter.run()
    assert out.getvalue() == b"abcfgh"
    assert "2 bytes of output skipped" in err.getvalue()


def test_waiting_without_following_reads_only_the_state() -> None:
    job = ScriptedJob([(b"", 0, "succeeded")])
    waiter, out, _ = waiter_for(job, follow=False)
    assert waiter.run()["state"] == "succeeded"
    assert out.getvalue() == b""
    assert all("/output" not in request for request in job.requests)


def test_a_server_that_does_not_answer_for_a_while_is_waited_for() -> None:
    job = ScriptedJob([(b"hi\n", 0, "running"), (b"hi\nthere\n", 0, "succeeded")])
    waiter, out, err = waiter_for(job)
    job.fail_next = 3
    waiter.run()
    assert out.getvalue() == b"hi\nthere\n"
    assert err.getvalue().splitlines() == [
        "jobrunner: cannot connect to http://jobs.test: connection refused; "
        "trying again for up to 60s"
    ]


def test_a_server_gone_for_longer_than_the_grace_fails_the_wait() -> None:
    job = ScriptedJob([(b"", 0, "running")])
    waiter, _, _ = waiter_for(job, grace=10)
    job.fail_next = 1000
    with pytest.raises(Unreachable):
        waiter.run()


def test_ctrl_c_cancels_the_job_and_waits_for_it_to_stop() -> None:
    job = ScriptedJob([(b"started\n", 0, "running")])
    waiter, out, err = waiter_for(job)
    sleeps = 0

    def sleep(seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 2:
            raise Interrupted(signal.SIGINT)

    waiter.sleep = sleep
    final, code = await_job(waiter)
    assert (final and final["state"], code) == ("cancelled", 130)
    assert "POST /jobs/1/cancel?" in job.requests
    assert out.getvalue() == b"started\n"
    assert err.getvalue() == (
        "jobrunner: interrupted: cancelling job 1 (Ctrl-C again to stop waiting)\n"
    )


def test_a_second_ctrl_c_stops_waiting() -> None:
    job = ScriptedJob([(b"", 0, "running")])
    job.honours_cancel = False
    waiter, _, err = waiter_for(job)

    def sleep(seconds: float) -> None:
        raise Interrupted(signal.SIGINT)

    waiter.sleep = sleep
    assert await_job(waiter) == (None, 130)
    assert err.getvalue().splitlines()[-1] == (
        "jobrunner: stopped waiting: job 1 may still be stopping"
    )


def test_sigterm_cancels_too_and_exits_143() -> None:
    job = ScriptedJob([(b"", 0, "running")])
    waiter, _, err = waiter_for(job)
    calls = 0

    def sleep(seconds: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Interrupted(signal.SIGTERM)

    waiter.sleep = sleep
    final, code = await_job(waiter)
    assert (final and final["state"], code) == ("cancelled", 143)
    assert err.getvalue().startswith("jobrunner: terminated: cancelling job 1")


def test_the_spinner_is_drawn_on_terminals_only_and_erased_before_notes() -> None:
    fake = FakeTime()
    quiet, shown = io.StringIO(), io.StringIO()
    for stream, enabled in ((quiet, False), (shown, True)):
        fake.now = 0
        progress = Progress(stream, 7, enabled=enabled, clock=fake.clock)
        fake.now = 65
        progress.update("running")
        progress.note("something happened")
        progress.finish("job 7 succeeded")
    assert quiet.getvalue() == "jobrunner: something happened\n"
    assert shown.getvalue().startswith(ERASE_LINE)
    assert "job 7 running 1:05" in shown.getvalue()
    assert shown.getvalue().endswith(
        ERASE_LINE + "jobrunner: something happened\njob 7 succeeded in 1:05\n"
    )


def test_the_spinner_does_not_draw_over_an_unfinished_line_of_output() -> None:
    stream = io.StringIO()
    progress = Progress(stream, 7, enabled=True, shares_terminal=True)
    progress.output_written(ends_line=False)
    progress.update("running")
    assert stream.getvalue() == ""
    progress.finish("job 7 succeeded")
    assert stream.getvalue().startswith("\njob 7 succeeded in ")


def test_elapsed_times() -> None:
    assert [elapsed_text(s) for s in (7.9, 754, 3723)] == ["0:07", "12:34", "1:02:03"]
