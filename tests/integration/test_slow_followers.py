"""A slow follower costs nobody else a line: a flood of output followed by readers that never
read, beside ordinary followers of another job, on one web process."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_follow import SSE, events
from tests.support import TEST_TOKEN, Api, Process, start_web, start_worker

FLOOD = "yes 'a flood of output, printed as fast as the pipe takes it'"
LINES = "for i in $(seq 40); do echo line-$i; sleep 0.05; done"
EXPECTED = "".join(f"line-{i}\n" for i in range(1, 41))
#: how much the web may grow while serving the scenario (it grew by 141 MiB before the fix)
MEMORY_BOUND = 48 * 1024 * 1024


def group_rss(pgid: int) -> int:
    """The resident memory of every process in a process group, in bytes."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


class Peak:
    """Samples a process group's memory in the background; `high` is the highest seen."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.high = group_rss(pgid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.1):
            self.high = max(self.high, group_rss(self.pgid))

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.high


def stalled_follower(port: int, job_id: int) -> socket.socket:
    """A follower that sends its request and never reads a byte of the answer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /jobs/{job_id}/output?follow=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TEST_TOKEN}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    return sock


def follow_text(url: str) -> tuple[str, list[str]]:
    """Everything an SSE follower received as output, and the names of its events."""
    received = ""
    names = []
    with httpx.stream("GET", url, headers=SSE, timeout=60) as response:
        for event in events(response.iter_lines()):
            names.append(event["event"])
            if event["event"] == "output":
                received += json.loads(event["data"])
    return received, names


@pytest.fixture
def stack(base_env: dict[str, str], log_dir: Path) -> Iterator[tuple[Process, str]]:
    env = dict(base_env, WEB_CONCURRENCY="1", WORKER_QUEUES="slow-followers")
    web, url = start_web(env, log_dir)
    worker = start_worker(env, log_dir, "slow-followers", WORKER_THREADS="2")
    yield web, url
    worker.stop()
    web.stop()


def test_readers_that_never_read_cost_the_others_nothing(stack: tuple[Process, str]) -> None:
    web, url = stack
    port = int(url.rsplit(":", 1)[1])
    with Api(url) as api:
        api.http.get("/jobs")  # warm: the first requests load what the web needs
        baseline = group_rss(web.pid)
        peak = Peak(web.pid)
        flood = api.submit(command=FLOOD, queue="slow-followers", timeout=60)["id"]
        api.wait(flood, {"running"})
        stalled = [stalled_follower(port, flood) for _ in range(4)]
        try:
            time.sleep(2)  # the flood fills the stalled followers' buffers, whatever they are
            job = api.submit(command=LINES, queue="slow-followers")["id"]
            results: list[tuple[str, list[str]]] = []
            follow_url = f"{url}/jobs/{job}/output?follow=1"
            readers = [
                threading.Thread(target=lambda: results.append(follow_text(follow_url)))
                for _ in range(6)
            ]
            for reader in readers:
                reader.start()
            for reader in readers:
                reader.join(timeout=90)
            assert len(results) == 6
            for received, names in results:
                assert received == EXPECTED  # every line, in order, once
                assert "gap" not in names and names[-1] == "end"
            assert api.job(flood)["state"] == "running"  # the flood went on all along
            assert api.http.get("/healthz").status_code == 200
        finally:
            high = peak.stop()
            for sock in stalled:
                sock.close()
            api.http.post(f"/jobs/{flood}/cancel")
        assert api.wait(flood, timeout=30)["state"] == "cancelled"
    grown = high - baseline
    assert grown < MEMORY_BOUND, f"the web grew by {grown / 2**20:.0f} MiB"
    assert "live output unavailable" not in web.output()  # Redis never dropped the web
