"""A webhook receiver for the tests, on 127.0.0.1 only: it checks every event's signature with
the reference library (standardwebhooks), keeps what it got, and answers as scripted per path.

    receiver.script("/flaky", [Answer(500), Answer(500), Answer(200)])
    job = api.submit(command="true", callback_url=receiver.url("/flaky"))
    receiver.wait_count("/flaky", 3)
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support import wait_for


@dataclass(frozen=True)
class Answer:
    status: int = 200
    #: seconds to wait before answering (a hang past the sender's timeout)
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    #: whether the signature checked out with the reference library
    verified: bool
    at: float

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


class Receiver:
    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)
        self.lock = threading.Lock()
        self.scripts: dict[str, list[Answer]] = {}
        self.received: defaultdict[str, list[Received]] = defaultdict(list)
        #: what a path with no script answers (the bench's slow receiver: a delay)
        self.default = Answer(200)
        #: paths that answer 500 the first time they see a webhook-id (then `default`)
        self.fail_first: set[str] = set()
        #: paths that answer 200 after this many seconds
        self.slow: dict[str, float] = {}
        #: requests being answered now, and the most there ever were at once
        self.in_flight = 0
        self.max_in_flight = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    receiver.webhook.verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                answer = receiver._answer(
                    self.path, Received(self.path, headers, body, verified, time.time())
                )
                with receiver.lock:
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                if answer.delay:
                    time.sleep(answer.delay)
                with receiver.lock:
                    receiver.in_flight -= 1
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _answer(self, path: str, received: Received) -> Answer:
        with self.lock:
            seen = any(r.webhook_id == received.webhook_id for r in self.received[path])
            self.received[path].append(received)
            script = self.scripts.get(path)
            if script:
                return script.pop(0)
            if path in self.fail_first and not seen:
                return Answer(500)
            if path in self.slow:
                return Answer(200, delay=self.slow[path])
            return self.default

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, answers: list[Answer]) -> None:
        with self.lock:
            self.scripts[path] = list(answers)

    def got(self, path: str) -> list[Received]:
        with self.lock:
            return list(self.received[path])

    def wait_count(self, path: str, count: int, timeout: float = 20) -> list[Received]:
        wait_for(
            lambda: len(self.got(path)) >= count,
            timeout=timeout,
            interval=0.05,
            what=f"{count} deliveries to {path}",
        )
        return self.got(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
