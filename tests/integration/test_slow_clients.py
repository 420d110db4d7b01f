"""Slow clients are cut off by a real `jobrunner web` (uvicorn) on 127.0.0.1: one that sends
nothing, one that sends its headers a byte at a time, one that never finishes its body, one
that stays idle after a request; and they do not keep anyone else waiting."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import AUTH, Process, start_web, wait_for

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
KEEPALIVE_TIMEOUT = 1
#: how much later than its timeout a cut-off may come (a loaded 2-core machine)
SLACK = 2.0
#: the attacker's pace: one byte this often, much faster than any timeout
DRIP_S = 0.1
DURATION = re.compile(r"duration_ms=([0-9.]+)")


@pytest.fixture(scope="module")
def guarded_web(base_env: dict[str, str], log_dir: Path) -> Iterator[tuple[Process, str]]:
    env = dict(
        base_env,
        JOBRUNNER_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        JOBRUNNER_BODY_TIMEOUT=str(BODY_TIMEOUT),
        JOBRUNNER_KEEPALIVE_TIMEOUT=str(KEEPALIVE_TIMEOUT),
    )
    proc, url = start_web(env, log_dir)
    yield proc, url
    proc.stop()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


class Attacker:
    """A client on one connection that sends `first`, then drips `rest` `size` bytes at a
    time, and records when the server closed the connection and what it answered."""

    def __init__(self, url: str, first: bytes, rest: bytes = b"", size: int = 1) -> None:
        self.sock = _connect(url)
        self.started = time.monotonic()
        self.closed_after: float | None = None
        self.answer = b""
        self.sock.sendall(first)
        self._rest = [rest[n : n + size] for n in range(0, len(rest), size)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, daemon=True)]
        if rest:
            self._threads.append(threading.Thread(target=self._drip, daemon=True))
        for thread in self._threads:
            thread.start()

    def _drip(self) -> None:
        for piece in self._rest:
            if self._stop.wait(DRIP_S):  # the attacker's pace, not a wait of the test
                return
            try:
                self.sock.send(piece)
            except OSError:
                return

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.answer += chunk
        except OSError:
            pass
        self.closed_after = time.monotonic() - self.started
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def _cut_off(attacker: Attacker, timeout: float) -> float:
    wait_for(
        lambda: attacker.closed_after is not None,
        timeout=timeout + SLACK + 5,
        what="the server to close the connection",
    )
    assert attacker.closed_after is not None
    return attacker.closed_after


HEADERS = b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def test_a_silent_connection_is_closed(guarded_web: tuple[Process, str]) -> None:
    attacker = Attacker(guarded_web[1], b"")
    try:
        after = _cut_off(attacker, HEADER_TIMEOUT)
    finally:
        attacker.close()
    assert HEADER_TIMEOUT - 0.2 <= after <= HEADER_TIMEOUT + SLACK
    assert attacker.answer.startswith(b"HTTP/1.1 408")


def test_headers_sent_a_byte_at_a_time_are_cut_off(guarded_web: tuple[Process, str]) -> None:
    dripped = b"".join(b"X-Pad-%d: %s\r\n" % (n, b"a" * 20) for n in range(200))
    attacker = Attacker(guarded_web[1], HEADERS, dripped)
    try:
        after = _cut_off(attacker, HEADER_TIMEOUT)
    finally:
        attacker.close()
    assert after <= HEADER_TIMEOUT + SLACK
    assert attacker.answer.startswith(b"HTTP/1.1 408")
    assert b"headers" in attacker.answer


def test_a_body_that_never_ends_is_cut_off(guarded_web: tuple[Process, str]) -> None:
    head = HEADERS + (
        b"Authorization: " + AUTH["Authorization"].encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
    )
    attacker = Attacker(guarded_web[1], head + b'{"command": "', b"x" * 10000)
    try:
        after = _cut_off(attacker, BODY_TIMEOUT)
    finally:
        attacker.close()
    assert after <= BODY_TIMEOUT + SLACK
    assert attacker.answer.startswith(b"HTTP/1.1 408")
    assert b"body" in attacker.answer
    # the request log says what the client got, not the 400 the app answered to the cut-off
    web = guarded_web[0]

    def cut_off_posts() -> list[str]:
        """The log lines of POSTs that lasted about a body timeout: the ones cut off. (The
        request's clock starts when the app is called, a little after the server armed the
        body deadline at the end of the headers: the line may show a few ms less than the
        timeout, 1,499.x ms. Every other POST here lasts well under a second.)"""
        return [
            line
            for line in web.output().splitlines()
            if (found := DURATION.search(line))
            and "event=request" in line
            and "method=POST" in line
            and float(found[1]) >= BODY_TIMEOUT * 1000 * 0.9
        ]

    wait_for(cut_off_posts, timeout=10, what="the cut-off request's log line")
    assert all("status=408" in line for line in cut_off_posts()), cut_off_posts()


def test_a_body_after_an_early_answer_does_not_keep_the_connection(
    guarded_web: tuple[Process, str],
) -> None:
    # no token: the 401 comes before the body, which then drips on and on
    head = HEADERS + b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
    attacker = Attacker(guarded_web[1], head, b"x" * 10000)
    try:
        after = _cut_off(attacker, BODY_TIMEOUT)
    finally:
        attacker.close()
    assert after <= BODY_TIMEOUT + SLACK
    assert attacker.answer.startswith(b"HTTP/1.1 401")
    assert attacker.answer.count(b"HTTP/1.1") == 1  # no 408 after the answer


def test_an_idle_connection_after_a_request_is_closed(guarded_web: tuple[Process, str]) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    attacker = Attacker(guarded_web[1], request)
    try:
        after = _cut_off(attacker, KEEPALIVE_TIMEOUT)
    finally:
        attacker.close()
    assert after <= KEEPALIVE_TIMEOUT + SLACK
    assert attacker.answer.startswith(b"HTTP/1.1 200")


def test_slow_clients_do_not_hold_up_anyone_else(guarded_web: tuple[Process, str]) -> None:
    """Five slow ones and a silent one, as the attack had them: all cut off, while a normal
    client is served at once."""
    url = guarded_web[1]
    head = HEADERS + b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
    attackers = [Attacker(url, HEADERS, b"X-Slow: " + b"a" * 1000) for _ in range(3)]
    attackers += [Attacker(url, head, b"x" * 10000) for _ in range(2)]
    attackers.append(Attacker(url, b""))
    try:
        started = time.monotonic()
        response = httpx.get(f"{url}/jobs", headers=AUTH, timeout=10)
        assert response.status_code == 200
        assert time.monotonic() - started < 1
        for attacker in attackers:
            assert _cut_off(attacker, BODY_TIMEOUT) <= BODY_TIMEOUT + SLACK
    finally:
        for attacker in attackers:
            attacker.close()


def test_a_client_within_the_timeouts_is_served(guarded_web: tuple[Process, str]) -> None:
    """A request whose headers and body arrive in pieces, each within its timeout."""
    body = b'{"command": "true", "queue": "nobody-serves-it"}'
    head = HEADERS + (
        b"Authorization: " + AUTH["Authorization"].encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    attacker = Attacker(guarded_web[1], head[:20], head[20:] + body, size=100)
    try:
        wait_for(lambda: b"\r\n\r\n" in attacker.answer, timeout=20, what="the answer")
    finally:
        attacker.close()
    assert attacker.answer.startswith(b"HTTP/1.1 201"), attacker.answer[:200]
