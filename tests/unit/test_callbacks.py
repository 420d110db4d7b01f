"""Completion callbacks without a server: signatures (checked by the reference library), the
retry schedule, Retry-After, which addresses are refused (before any connection), events."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket

import pytest
from standardwebhooks import Webhook

from actors.sender import Sender
from service import callbacks
from service.config import ConfigError, Settings
from service.destinations import AllowList, Refused, check_url, resolve
from service.outbox import Claimed

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
NEXT = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()
NOW = dt.datetime(2026, 12, 1, 12, 0, 0)


def test_signatures_verify_with_the_reference_library() -> None:
    body = b'{"type":"job.succeeded","timestamp":"2026-12-01T12:00:00.000Z","data":{"id":1}}'
    headers = callbacks.headers([NEXT, SECRET], "msg_1", int(dt.datetime.now().timestamp()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, NEXT):  # either key of a rotation verifies
        assert Webhook(secret).verify(body, headers) == json.loads(body)
    reference = Webhook(SECRET).sign("msg_1", dt.datetime.fromtimestamp(1796126400, dt.UTC), "{}")
    assert callbacks.sign([SECRET], "msg_1", 1796126400, b"{}") == reference


def test_a_secret_is_whsec_and_base64() -> None:
    for bad in ("secret", "whsec_not*base64", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError):
            callbacks.secret_key(bad)
    unpadded = SECRET.rstrip("=")
    assert callbacks.secret_key(unpadded) == callbacks.secret_key(SECRET)
    with pytest.raises(ConfigError):
        Settings.from_environ({"JOBRUNNER_CALLBACK_SECRET": "nope"})
    with pytest.raises(ConfigError, match="needs JOBRUNNER_CALLBACK_SECRET"):
        Settings.from_environ({"JOBRUNNER_CALLBACK_URL": "https://example.com/hook"})
    with pytest.raises(ConfigError, match="private"):
        Settings.from_environ(
            {"JOBRUNNER_CALLBACK_URL": "http://10.0.0.1/", "JOBRUNNER_CALLBACK_SECRET": SECRET}
        )


def test_the_retry_schedule_grows_five_times_capped_at_ten_hours() -> None:
    delays = [callbacks.next_delay(attempt, 5.0) for attempt in range(1, 9)]
    assert delays == [5, 25, 125, 625, 3125, 15625, 36000, 36000]
    assert callbacks.next_delay(1, 5.0, retry_after=60) == 60  # a longer Retry-After wins
    assert callbacks.next_delay(3, 5.0, retry_after=60) == 125  # a shorter one does not
    assert callbacks.next_delay(1, 5.0, retry_after=10**9) == 36000


def test_retry_after_as_seconds_or_a_date() -> None:
    assert callbacks.parse_retry_after("120", NOW) == 120
    assert callbacks.parse_retry_after("Tue, 01 Dec 2026 12:01:00 GMT", NOW) == 60
    assert callbacks.parse_retry_after("soon", NOW) is None
    assert callbacks.parse_retry_after(None, NOW) is None


ALLOW = AllowList.parse(["127.0.0.1", "hooks.internal", "10.20.0.0/16"])


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://127.0.0.2/",
        "http://0.0.0.0/",
        "http://100.100.100.200/",
        "http://224.0.0.1/",
        "http://localhost/",
        "http://api.localhost/",
        "http://u:p@example.com/",
        "http:///nohost",
        "javascript:alert(1)",
    ],
)
def test_refused_without_dns(url: str) -> None:
    with pytest.raises(Refused):
        check_url(url, ALLOW)


def test_allowed_as_written() -> None:
    assert check_url("http://127.0.0.1:8080/x", ALLOW).destination == "http://127.0.0.1:8080"
    assert check_url("http://10.20.3.4/", ALLOW).port == 80
    assert check_url("https://hooks.internal/", ALLOW).port == 443
    assert check_url("https://example.com/hook", ALLOW).host == "example.com"


def fake_resolver(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve_name(host: str, port: int) -> list[str]:
        return answers[host]

    return resolve_name


def test_a_name_that_resolves_inside_is_refused_at_delivery() -> None:
    resolver = fake_resolver(
        {
            "rebound.example.com": ["93.184.215.14", "10.1.2.3"],
            "public.example.com": ["93.184.215.14"],
            "hooks.internal": ["10.9.9.9"],
            "localhost.example.com": ["127.0.0.1"],  # 127.0.0.1 allows the address, not names
        }
    )
    for name in ("rebound.example.com", "localhost.example.com"):
        with pytest.raises(Refused, match="resolves to"):
            resolve(check_url(f"http://{name}/", ALLOW), ALLOW, resolver)
    public = check_url("http://public.example.com/", ALLOW)
    assert resolve(public, ALLOW, resolver) == "93.184.215.14"
    internal = check_url("http://hooks.internal/", ALLOW)
    assert resolve(internal, ALLOW, resolver) == "10.9.9.9"  # listed by name


def test_the_sender_refuses_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_connection(*args: object, **kwargs: object) -> None:
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    monkeypatch.setattr(socket.socket, "connect", no_connection)
    settings = Settings(callback_secrets=(SECRET,), callback_allow=("127.0.0.1",))
    sender = Sender(settings, engine=None, resolver=fake_resolver({"evil.example": ["10.0.0.7"]}))  # type: ignore[arg-type]
    claimed = Claimed(
        1, 1, 1, "msg_x", 7, "http://evil.example/hook", "http://evil.example:80", b"{}", NOW
    )
    attempt, outcome = sender.attempt(claimed)
    assert outcome == "refused" and attempt.retry_in is None
    assert attempt.error is not None and "10.0.0.7" in attempt.error
    sender.pool.shutdown()


def test_an_event_carries_the_job_resource_only() -> None:
    from service.queries import Job

    job = Job(
        id=3, command="true", argv=None, queue="q", priority=0, state="failed", attempts=1,
        max_retries=0, timeout=60, exit_code=1, last_error="exit status 1", run_at=NOW,
        locked_at=NOW, locked_by="h:1", started_at=NOW, finished_at=NOW, failed_at=NOW,
        created_at=NOW, updated_at=NOW, cancel_requested_at=None, end_reason="exited",
        exit_signal=None, output_offset=0, output_bytes=5, callback_url="https://example.com/",
    )  # fmt: skip
    event = json.loads(callbacks.render(job, NOW))
    assert event["type"] == "job.failed"
    assert event["timestamp"] == "2026-12-01T12:00:00.000Z"
    assert event["data"]["id"] == 3 and "env" not in event["data"] and "output" not in event["data"]
