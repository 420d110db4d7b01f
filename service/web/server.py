"""The HTTP server's side of slow clients: how long a client may take to send a request.

uvicorn closes a keep-alive connection idle between requests (`timeout_keep_alive`), but sets no
deadline on reading a request: a client that connects and sends nothing, sends its headers a
byte at a time, or never finishes its body keeps its connection (and its place in the
process's connection count) forever. `GuardedHttpToolsProtocol` is uvicorn's httptools protocol
with two deadlines more:

- the headers: from the connection (or the first byte of a next request) to the end of the
  headers, `JOBRUNNER_HEADER_TIMEOUT` seconds;
- the body: from the end of the headers to the end of the body, `JOBRUNNER_BODY_TIMEOUT`
  seconds, whether the app reads the body or answered before it came.

Past one, the client gets `408 Request Timeout` (unless an answer has started) and the
connection is closed. What happens after the request (a response the client reads slowly, a
follow stream) is not bounded here; SECURITY.md says what a proxy in front adds.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import Settings

log = structlog.get_logger(__name__)

#: the protocol's import path: uvicorn loads it by name in each web process it spawns
PROTOCOL = "service.web.server:GuardedHttpToolsProtocol"
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s"
)


@functools.cache
def _deadlines() -> tuple[float, float]:
    """The header and body timeouts of this process, read once from its environment (as
    every web process reads its settings: `create_app` in each one uvicorn spawns)."""
    settings = Settings.from_environ()
    return settings.header_timeout, settings.body_timeout


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn settings of a web process (`jobrunner web`, `jobrunner dev`)."""
    return {
        "http": PROTOCOL,
        "timeout_keep_alive": settings.keepalive_timeout,
        "timeout_graceful_shutdown": 10,
        "log_config": None,
        "access_log": False,
    }


#: the key of a request's scope state that holds the status the server itself answered with
ANSWERED_BY_SERVER = "answered_by_server"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with deadlines for a request's headers and body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout, self.body_timeout = _deadlines()
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, waiting_for: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, waiting_for)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "headers")  # a client that sends nothing, too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a next request on a kept-alive connection
            self._arm(self.header_timeout, "headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout, "body")  # disarmed by the end of the message

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _expired(self, waiting_for: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        timeout = self.header_timeout if waiting_for == "headers" else self.body_timeout
        log.warning(
            "request timed out",
            waiting_for=waiting_for,
            timeout=timeout,
            client=f"{self.client[0]}:{self.client[1]}" if self.client else None,
        )
        if self._may_answer(waiting_for):
            body = b'{"error": "the request was not received in time (%s within %gs)"}' % (
                waiting_for.encode(),
                timeout,
            )
            self.transport.write(REQUEST_TIMEOUT % (len(body), body))
            if waiting_for == "body" and self.cycle is not None:
                # the app, still reading, sees a disconnect and answers a 400 nobody gets:
                # the request log and metrics must say what the client got
                self.cycle.scope.setdefault("state", {})[ANSWERED_BY_SERVER] = 408
        self.transport.close()

    def _may_answer(self, waiting_for: str) -> bool:
        """Whether a 408 can go out now: no answer to this request has started, and none to
        an earlier one is under way (it would land in the middle of it)."""
        cycle = self.cycle
        if waiting_for == "headers":  # `cycle` is the previous request's, if any
            return cycle is None or cycle.response_complete
        return cycle is not None and not cycle.response_started
