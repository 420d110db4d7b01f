"""A small keep-alive HTTP client of the job API (stdlib http.client: cheap per request).

One `Api` holds one connection: use one per thread. Every request carries the bench token in
`Authorization: Bearer`, as the web will soon require.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    #: time.time() when the whole response had been read
    received: float

    def json(self) -> Any:
        return json.loads(self.body)


def parse_time(value: str | None) -> float | None:
    """An API time (ISO 8601, UTC, `Z`) as seconds since the epoch."""
    if value is None:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Api:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}"}
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        """One request on the kept-alive connection (reconnects once if the server closed it)."""
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                return Reply(
                    response.status,
                    {k.lower(): v for k, v in response.getheaders()},
                    payload,
                    time.time(),
                )
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def submit(self, command: str, **fields: Any) -> tuple[dict[str, Any], float]:
        """POST /jobs; the job and the time its 201 was received."""
        reply = self.request("POST", "/jobs", {"command": command, **fields})
        if reply.status != 201:
            raise RuntimeError(f"POST /jobs answered {reply.status}: {reply.body[:200]!r}")
        return reply.json(), reply.received

    def job(self, job_id: int) -> dict[str, Any]:
        reply = self.request("GET", f"/jobs/{job_id}")
        if reply.status != 200:
            raise RuntimeError(f"GET /jobs/{job_id} answered {reply.status}")
        return reply.json()

    def wait_final(self, job_id: int, timeout: float, interval: float = 0.05) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() >= deadline:
                raise RuntimeError(f"job {job_id} not final after {timeout:g} s: {job['state']}")
            time.sleep(interval)
