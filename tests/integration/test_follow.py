"""Following output live, from a web process, of jobs run by a worker in another process."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis

from tests.conftest import REDIS_URL
from tests.support import AUTH, Api, start_web, wait_for

SSE = {**AUTH, "Accept": "text/event-stream"}
SSE_TYPE = ("text/event-stream", "text/event-stream")


def gated(tmp_path: Path) -> tuple[str, Path]:
    """A command printing `first`, waiting for a gate file, then printing `second`."""
    gate = tmp_path / f"gate-{uuid.uuid4().hex}"
    command = f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second"
    return command, gate


def events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Parse Server-Sent Events from a line iterator."""
    event: dict[str, str] = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            event[name] = value


def test_lines_arrive_before_the_job_ends(worked_api: Api, tmp_path: Path) -> None:
    command, gate = gated(tmp_path)
    job = worked_api.submit(command=command)
    url = f"{worked_api.base_url}/jobs/{job['id']}/output?follow=1"
    with httpx.stream("GET", url, headers=AUTH, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        lines = response.iter_lines()
        assert next(lines) == "first"
        assert worked_api.job(job["id"])["state"] == "running"
        gate.touch()
        assert list(lines) == ["second"]  # and the stream ends with the job
    assert worked_api.job(job["id"])["state"] == "succeeded"


def test_sse_resumes_by_last_event_id_without_loss_or_repeat(
    worked_api: Api, tmp_path: Path
) -> None:
    command, gate = gated(tmp_path)
    job = worked_api.submit(command=f"printf 'é%.0s' 1 2 3; echo; {command}; exit 4")
    url = f"{worked_api.base_url}/jobs/{job['id']}/output?follow=1"
    with httpx.stream("GET", url, headers=SSE, timeout=20) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        first = next(e for e in events(response.iter_lines()) if e["event"] == "output")
    received = json.loads(first["data"])
    assert received and int(first["id"]) == len(received.encode())  # id: bytes sent so far
    gate.touch()
    with httpx.stream("GET", url, headers={**SSE, "Last-Event-ID": first["id"]}, timeout=20) as r:
        rest = list(events(r.iter_lines()))
    received += "".join(json.loads(e["data"]) for e in rest if e["event"] == "output")
    assert received == "ééé\nfirst\nsecond\n"
    end = rest[-1]
    assert end["event"] == "end"
    assert json.loads(end["data"]) == {
        "state": "failed",
        "exit_code": 4,
        "last_error": "exit status 4",
    }
    assert int(end["id"]) == len(received.encode())


def test_following_a_waiting_job_gets_everything_once_it_runs(
    worked_api: Api, tmp_path: Path
) -> None:
    later = time.time() + 1.5
    run_at = (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(later)) + f".{int(later % 1 * 1000):03d}Z"
    )
    job = worked_api.submit(command="echo one; sleep 0.3; echo two", run_at=run_at)
    assert job["state"] == "scheduled"
    url = f"{worked_api.base_url}/jobs/{job['id']}/output?follow=1"
    started = time.monotonic()
    with httpx.stream("GET", url, headers=AUTH, timeout=20) as response:
        assert list(response.iter_lines()) == ["one", "two"]
    # the worker that started it knew of the follower (its request came before the job ran):
    # the lines came live, not with the follower's check every 15 s
    assert time.monotonic() - started < 10


def test_following_a_finished_job_returns_at_once(worked_api: Api) -> None:
    job = worked_api.submit(command="echo done")
    worked_api.wait(job["id"])
    started = time.monotonic()
    response = worked_api.http.get(f"/jobs/{job['id']}/output?follow=1", headers=SSE)
    assert time.monotonic() - started < 2
    parsed = list(events(iter(response.text.split("\n"))))
    assert [e["event"] for e in parsed] == ["output", "end"]
    assert json.loads(parsed[0]["data"]) == "done\n"


def test_following_across_retries(worked_api: Api) -> None:
    job = worked_api.submit(command="bin/flaky.sh 2", max_retries=1)
    url = f"{worked_api.base_url}/jobs/{job['id']}/output?follow=1"
    with httpx.stream("GET", url, headers=AUTH, timeout=30) as response:
        text = "".join(response.iter_text())
    assert text == "run 1\n\n--- jobrunner: attempt 2 ---\nrun 2\n"
    assert worked_api.job(job["id"])["state"] == "succeeded"


def test_bad_follow_parameters(worked_api: Api) -> None:
    assert worked_api.http.get("/jobs/1/output?follow=maybe").status_code == 422
    job = worked_api.submit(command="true")
    bad = worked_api.http.get(
        f"/jobs/{job['id']}/output?follow=1", headers={**SSE, "Last-Event-ID": "x"}
    )
    assert bad.status_code == 422


def test_a_stopping_web_ends_its_follow_streams(
    worked_api: Api, base_env: dict[str, str], log_dir: Path, tmp_path: Path
) -> None:
    command, gate = gated(tmp_path)
    job = worked_api.submit(command=command)
    web, url = start_web(base_env, log_dir)
    try:
        with httpx.stream(
            "GET", f"{url}/jobs/{job['id']}/output?follow=1", headers=AUTH, timeout=20
        ) as response:
            lines = response.iter_lines()
            assert next(lines) == "first"
            stopping = time.monotonic()
            web.signal(signal.SIGTERM)
            assert list(lines) == []  # the stream ends cleanly, before the job does
        assert web.proc.wait(timeout=10) == 0  # a clean exit
        assert time.monotonic() - stopping < 5
    finally:
        gate.touch()
        web.stop()
    wait_for(lambda: worked_api.job(job["id"])["state"] == "succeeded", timeout=10)


def _sse_reader(url: str, headers: dict[str, str]) -> tuple[threading.Thread, list[str]]:
    """Read an SSE stream in a thread: its raw lines, as they come."""
    lines: list[str] = []

    def read() -> None:
        with httpx.stream("GET", url, headers=headers, timeout=30) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                lines.append(line)
        lines.append("<closed>")

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, lines


def _end(lines: list[str]) -> dict[str, object]:
    ends = [e for e in events(iter(lines)) if e.get("event") == "end"]
    assert len(ends) == 1, lines
    return json.loads(ends[0]["data"])


def test_deleting_a_running_followed_job_ends_the_stream_with_deleted(
    worked_api: Api, tmp_path: Path, log_dir: Path
) -> None:
    command, gate = gated(tmp_path)
    job = worked_api.submit(command=command)
    url = f"{worked_api.base_url}/jobs/{job['id']}/output?follow=1"
    thread, lines = _sse_reader(url, SSE)
    try:
        wait_for(lambda: any("first" in line for line in lines), what="the first line")
        assert worked_api.http.delete(f"/jobs/{job['id']}").status_code == 204
        wait_for(lambda: "<closed>" in lines, timeout=5, what="the stream to end")
    finally:
        gate.touch()
    thread.join(timeout=5)
    assert _end(lines) == {"state": "deleted", "exit_code": None, "last_error": None}
    web_logs = "".join(path.read_text() for path in log_dir.glob("web-*.log"))
    assert "RuntimeError" not in web_logs and "Exception in ASGI" not in web_logs


def test_deleting_a_waiting_followed_job_ends_the_stream_at_once(api: Api) -> None:
    job = api.submit(command="true", queue="nobody-serves-it")
    url = f"{api.base_url}/jobs/{job['id']}/output?follow=1"
    thread, lines = _sse_reader(url, SSE)
    wait_for(lambda: ": keepalive" in lines, what="the follower to subscribe")
    assert api.http.delete(f"/jobs/{job['id']}").status_code == 204
    started = time.monotonic()
    wait_for(lambda: "<closed>" in lines, timeout=5, what="the stream to end")
    assert time.monotonic() - started < 1  # at once: not at the next check of the database
    thread.join(timeout=5)
    assert _end(lines)["state"] == "deleted"


def test_head_on_a_follow_stream_does_not_hold_the_connection(api: Api) -> None:
    job = api.submit(command="true", queue="nobody-serves-it")
    url = f"/jobs/{job['id']}/output?follow=1"
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with httpx.Client(base_url=api.base_url, headers=AUTH, limits=one, timeout=10) as client:
        for accept, media_type in (("text/plain", "text/plain"), SSE_TYPE):
            started = time.monotonic()
            response = client.head(url, headers={"Accept": accept})
            assert response.status_code == 200
            assert response.headers["content-type"].startswith(media_type)
            assert response.headers["x-job-state"] == "queued"
            assert response.content == b""
            # the same connection serves the next request at once: nothing streams on it
            assert client.get(f"/jobs/{job['id']}").status_code == 200
            assert time.monotonic() - started < 2


def test_the_end_event_carries_the_final_state_the_database_has(
    api: Api, redis_namespace: str
) -> None:
    """An end message that the database does not bear out (a race, a retry) does not end the
    stream: only the real final state does."""
    job = api.submit(command="true", queue="nobody-serves-it")
    url = f"{api.base_url}/jobs/{job['id']}/output?follow=1"
    thread, lines = _sse_reader(url, SSE)
    wait_for(lambda: lines.count(": keepalive") >= 1, what="the follower to subscribe")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        channel = f"{redis_namespace}:meta:out:{job['id']}"
        for message in (b"Esucceeded", b'E["failed", 1, "exit status 1"]'):  # both formats
            assert client.publish(channel, message) >= 1
    finally:
        client.close()
    # still open after it: the next idle check comes, and the stream goes on
    wait_for(lambda: lines.count(": keepalive") >= 2, what="the stream to go on")
    assert "<closed>" not in lines
    assert api.http.post(f"/jobs/{job['id']}/cancel").status_code == 202
    wait_for(lambda: "<closed>" in lines, timeout=20, what="the stream to end")
    thread.join(timeout=5)
    assert _end(lines) == {"state": "cancelled", "exit_code": None, "last_error": "cancelled"}
