"""An HTTP client of the job API (docs/API.md), used by the `jobrunner` client commands.

It needs httpx only, none of the server's modules: the client commands run on machines that
have no database or broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
#: answers that say "not now" rather than "no": worth asking again while waiting
TRANSIENT_STATUSES = frozenset({502, 503, 504})
#: answers that say the request itself was wrong (bad input): exit code 2, like a usage error
INPUT_STATUSES = frozenset({400, 422})

Job = dict[str, Any]


class ClientError(Exception):
    """A request failed; the message is one line for a person."""

    exit_code = 1
    transient = False


class Unreachable(ClientError):
    """The server did not answer at all (refused, unknown host, timed out)."""

    transient = True


class ApiError(ClientError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.exit_code = 2 if status in INPUT_STATUSES else 1
        self.transient = status in TRANSIENT_STATUSES


def error_message(response: httpx.Response) -> str:
    """One line from an error response: `{"error": ...}`, a 422 field map, or the status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    if isinstance(body, dict) and body and response.status_code == 422:
        problems: list[str] = []
        for field, messages in body.items():
            if isinstance(messages, list):
                problems.extend(f"{field} {message}" for message in messages)
            else:
                problems.append(f"{field} {messages}")
        return "invalid: " + "; ".join(problems)
    if response.status_code == 401:
        return "not authorized: set JOBRUNNER_TOKEN or --token"
    text = " ".join(response.text.split())[:200]
    return f"{response.reason_phrase or 'error'}" + (f": {text}" if text else "")


@dataclass(frozen=True)
class OutputChunk:
    """Part of a job's output, as GET /jobs/{id}/output returns it."""

    offset: int  # where `data` starts in the job's whole output
    data: bytes
    total: int  # bytes the job has printed so far
    state: str  # the job's state when the output was read


class ApiClient:
    """The job API at `url`; sends `Authorization: Bearer <token>` when a token is given."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "jobrunner-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.ConnectError as exc:
            raise Unreachable(f"cannot connect to {self.url}: {_reason(exc)}") from None
        except httpx.TimeoutException:
            raise Unreachable(f"no answer from {self.url} in time") from None
        except httpx.TransportError as exc:
            raise Unreachable(f"lost the connection to {self.url}: {_reason(exc)}") from None
        if response.is_redirect:
            location = response.headers.get("Location", "elsewhere")
            raise ApiError(
                response.status_code, f"the server sends this request to {location}: fix the URL"
            )
        if response.status_code >= 400:
            raise ApiError(response.status_code, error_message(response))
        return response

    def _json(self, method: str, url: str, **kwargs: Any) -> Job:
        job: Job = _json_of(self._request(method, url, **kwargs), self.url)
        return job

    def submit(self, fields: dict[str, Any], idempotency_key: str | None = None) -> Job:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", "/jobs", json=fields, headers=headers)

    def job(self, job_id: int) -> Job:
        return self._json("GET", f"/jobs/{job_id}")

    def pages(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        limit: int | None = None,
        order: str = "asc",
        follow_links: bool = False,
    ) -> Iterator[list[Job]]:
        """Pages of GET /jobs; with `follow_links`, every page the `Link: rel="next"` leads to."""
        params = {"state": state, "queue": queue, "limit": limit, "order": order}
        url: str | httpx.URL = "/jobs"
        query: dict[str, Any] | None = {k: v for k, v in params.items() if v is not None}
        while True:
            response = self._request("GET", url, params=query)
            yield _json_of(response, self.url)
            link = response.links.get("next", {}).get("url")
            if not follow_links or not link:
                return
            url, query = response.url.join(link), None  # the link carries the query

    def schedules(self) -> list[Job]:
        found: list[Job] = _json_of(self._request("GET", "/schedules"), self.url)
        return found

    def schedule(self, schedule_id: int) -> Job:
        return self._json("GET", f"/schedules/{schedule_id}")

    def create_schedule(self, fields: dict[str, Any]) -> Job:
        return self._json("POST", "/schedules", json=fields)

    def change_schedule(self, schedule_id: int, fields: dict[str, Any]) -> Job:
        return self._json("PATCH", f"/schedules/{schedule_id}", json=fields)

    def delete_schedule(self, schedule_id: int) -> None:
        self._request("DELETE", f"/schedules/{schedule_id}")

    def trigger(self, schedule_id: int) -> Job:
        return self._json("POST", f"/schedules/{schedule_id}/trigger")

    def cancel(self, job_id: int) -> Job:
        return self._json("POST", f"/jobs/{job_id}/cancel")

    def retry(self, job_id: int) -> Job:
        return self._json("POST", f"/jobs/{job_id}/retry")

    def output(self, job_id: int, offset: int = 0) -> OutputChunk:
        """The output from `offset` on (or from where the server's bounded copy starts)."""
        params = {"offset": offset} if offset else None
        response = self._request(
            "GET", f"/jobs/{job_id}/output", params=params, headers={"Accept": "text/plain"}
        )
        data = response.content
        start = int(response.headers.get("X-Output-Offset", offset))
        return OutputChunk(
            offset=start,
            data=data,
            total=int(response.headers.get("X-Output-Bytes", start + len(data))),
            state=response.headers.get("X-Job-State", ""),
        )

    def follow(self, job_id: int, offset: int = 0) -> Iterator[OutputChunk]:
        """The output from `offset` on as the job prints it (`?follow=1`), until the server
        ends the stream: when the job is final, or when the server stops (then follow again
        from where it ended). The first chunk is empty and tells where the output starts."""
        params = {"follow": "1", "offset": str(offset)}
        timeout = httpx.Timeout(self.http.timeout.connect, read=STREAM_IDLE_S)
        try:
            with self.http.stream(
                "GET",
                f"/jobs/{job_id}/output",
                params=params,
                headers={"Accept": "text/plain"},
                timeout=timeout,
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(response.status_code, error_message(response))
                cursor = int(response.headers.get("X-Output-Offset", offset))
                state = response.headers.get("X-Job-State", "")
                yield OutputChunk(cursor, b"", cursor, state)
                for data in response.iter_bytes():
                    yield OutputChunk(cursor, data, cursor + len(data), state)
                    cursor += len(data)
        except httpx.ConnectError as exc:
            raise Unreachable(f"cannot connect to {self.url}: {_reason(exc)}") from None
        except httpx.TimeoutException:
            raise Unreachable(f"no output from {self.url} for {STREAM_IDLE_S:.0f}s") from None
        except httpx.TransportError as exc:
            raise Unreachable(f"lost the connection to {self.url}: {_reason(exc)}") from None


#: a follow stream that sends nothing for this long is opened again
STREAM_IDLE_S = 60.0


def _json_of(response: httpx.Response, base_url: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ClientError(
            f"{response.url} did not answer with JSON: is {base_url} the job API?"
        ) from None


def _reason(exc: Exception) -> str:
    """The innermost cause, shortly: 'connection refused' rather than a chain of wrappers."""
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    if "name or service not known" in text.lower() or "nodename nor servname" in text.lower():
        return "unknown host"
    return text.split("] ", 1)[-1]
