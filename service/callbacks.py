"""Completion callbacks (API.md section 8): the event of a job's final state, written to the
outbox in the transaction that makes it final, and how it is signed and retried.

The event's body is rendered here, at the final transition, from the job as that transaction
left it: a retention of 0 deletes the job in the same transaction, and the sender (in the
worker role: actors/sender.py) must still have what to send. Signatures follow the Standard
Webhooks specification: `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{ts}.{body}">`,
one per secret of JOBRUNNER_CALLBACK_SECRET during a rotation.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.db import callback_events
from service.queries import Job
from service.resource import format_time, job_to_json
from service.states import FINAL, State

SECRET_PREFIX = "whsec_"
#: each retry waits this many times longer than the one before, up to MAX_DELAY_S
GROWTH = 5.0
MAX_DELAY_S = 10 * 3600.0
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError if it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("each secret must start with whsec_ (whsec_ + base64 of 24-64 bytes)")
    encoded = secret[len(SECRET_PREFIX) :]
    try:  # padding may be left out, as the reference library allows
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after whsec_ must be base64") from None
    if len(key) < 16:
        raise ValueError("a secret must hold at least 16 bytes (24-64 recommended)")
    return key


def sign(secrets: Sequence[str], event_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,<signature>` per secret, space-separated."""
    content = f"{event_id}.{timestamp}.".encode() + body
    signatures = []
    for secret in secrets:
        digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode())
    return " ".join(signatures)


def headers(secrets: Sequence[str], event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "http-job-runner-callbacks/1",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, event_id, timestamp, body),
    }


def next_delay(attempt: int, backoff: float, retry_after: float | None = None) -> float:
    """The wait after failed attempt `attempt` (1-based): `backoff`, then 5 times the one
    before, capped at 10 hours; a longer Retry-After wins (within the same cap)."""
    delay = min(MAX_DELAY_S, backoff * GROWTH ** (attempt - 1))
    if retry_after is not None and retry_after > delay:
        delay = min(MAX_DELAY_S, retry_after)
    return delay


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when.astimezone(dt.UTC).replace(tzinfo=None) - now).total_seconds())


def destination_of(url: str) -> str:
    """`scheme://host:port` of a URL checked at create (service.destinations.check_url)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"[:300]


def render(job: Job, at: dt.datetime) -> bytes:
    """The event's body: `{"type", "timestamp", "data": <the job resource>}` (never its env
    nor its output: the resource carries neither)."""
    state = State(job.state)
    assert state in FINAL
    event = {"type": f"job.{state.value}", "timestamp": format_time(at), "data": job_to_json(job)}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def urls_for(job_url: str | None, every_job_url: str | None) -> list[str]:
    """The destinations of a job's events: its own callback_url, and JOBRUNNER_CALLBACK_URL."""
    return list(dict.fromkeys(url for url in (job_url, every_job_url) if url))


def record(conn: Connection, job: Job, urls: Iterable[str], at: dt.datetime) -> str:
    """Write the event of a job that has just become final to the outbox, one row per URL,
    in the caller's transaction (service.jobs); returns its webhook-id."""
    return record_many(conn, [(job, urls)], at)[0]


def record_many(
    conn: Connection, ended: Sequence[tuple[Job, Iterable[str]]], at: dt.datetime
) -> list[str]:
    """`record` for several jobs that have just become final (the batched ends of one worker
    process, service.jobs.end_attempts): one INSERT for all their rows; their webhook-ids."""
    event_ids: list[str] = []
    rows: list[dict[str, Any]] = []
    for job, urls in ended:
        event_id = f"msg_{uuid.uuid4().hex}"
        event_ids.append(event_id)
        body = render(job, at)
        rows.extend(
            {
                "event_id": event_id,
                "job_id": job.id,
                "url": url,
                "destination": destination_of(url),
                "body": body,
                "state": PENDING,
                "attempts": 0,
                "lease": 0,
                "next_attempt_at": at,
                "created_at": at,
                "finished_at": None,
            }
            for url in urls
        )
    if not rows:
        return event_ids
    if conn.dialect.name in ("mysql", "mariadb"):
        _insert_mysql(conn, rows)
    else:
        conn.execute(INSERT_EVENT, rows)
    return event_ids


#: built once: every job with a callback executes it as it ends
INSERT_EVENT = callback_events.insert()
_COLUMNS = tuple(column.name for column in callback_events.columns if column.name != "id")
MYSQL_INSERT = (
    f"INSERT INTO callback_events ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
)


def _insert_mysql(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """The INSERT on the driver's own cursor, in the caller's transaction: it is on the path
    of every job that ends with a callback, and the driver alone costs a third of what a
    Core statement does. Its errors come out as SQLAlchemy's, as from any statement (so that
    `service.db.transaction` tells conflicts, refusals and outages apart), and a connection
    found dead is invalidated."""
    params = [tuple(row[name] for name in _COLUMNS) for row in rows]
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    cursor = dbapi_connection.cursor()
    try:
        cursor.executemany(MYSQL_INSERT, params)  # one multi-row INSERT
    except conn.dialect.loaded_dbapi.Error as exc:
        dropped = conn.dialect.is_disconnect(exc, dbapi_connection, cursor)
        if dropped:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            MYSQL_INSERT,
            params,
            exc,
            conn.dialect.loaded_dbapi.Error,
            connection_invalidated=dropped,
            dialect=conn.dialect,
        ) from exc
    finally:
        cursor.close()
