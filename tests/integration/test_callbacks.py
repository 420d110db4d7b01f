"""Completion callbacks (API.md section 8), end to end: `jobrunner web` and `jobrunner worker`
(its sender process) on MariaDB and Redis, POSTing to a receiver on 127.0.0.1 that checks
every signature with the reference library and answers as each test scripts it.

Only 127.0.0.1 is ever contacted: it is the one allowed address (JOBRUNNER_CALLBACK_ALLOW),
and every refusal tested here is decided before any connection is made.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.receiver import Answer, Receiver
from tests.support import (
    JOBRUNNER,
    TEST_TOKEN,
    Api,
    Process,
    start_dev,
    start_web,
    start_worker,
    wait_for,
)

SECRET = "whsec_" + base64.b64encode(b"callback-test-secret-0123456789").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-previous-secret-9876543210").decode()
QUEUE = "callbacks"
TIMEOUT_S = 1.0
BACKOFF_S = 0.3
ATTEMPTS = 4


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver(SECRET)
    yield server
    server.close()


@pytest.fixture(scope="module")
def callback_env(base_env: dict[str, str], receiver: Receiver) -> dict[str, str]:
    return dict(
        base_env,
        JOBRUNNER_CALLBACK_SECRET=f"{SECRET} {OLD_SECRET}",
        JOBRUNNER_CALLBACK_ALLOW="127.0.0.1",
        JOBRUNNER_CALLBACK_BACKOFF=str(BACKOFF_S),
        JOBRUNNER_CALLBACK_ATTEMPTS=str(ATTEMPTS),
        JOBRUNNER_CALLBACK_TIMEOUT=str(TIMEOUT_S),
        JOBRUNNER_CALLBACK_URL=receiver.url("/every-job"),
    )


@pytest.fixture(scope="module")
def stack(callback_env: dict[str, str], log_dir: Path) -> Iterator[tuple[str, Process]]:
    web, url = start_web(callback_env, log_dir)
    worker = start_worker(callback_env, log_dir, "callbacks", WORKER_QUEUES=QUEUE)
    yield url, worker
    worker.stop()
    web.stop()


@pytest.fixture
def api(stack: tuple[str, Process], engine: sa.Engine) -> Iterator[Api]:
    with engine.begin() as conn:
        for table in ("jobs", "callback_events", "callback_deliveries"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    client = Api(stack[0])
    yield client
    client.http.close()


def submit(api: Api, path: str, receiver: Receiver, **fields: Any) -> dict[str, Any]:
    fields.setdefault("command", "true")
    return api.submit(queue=QUEUE, callback_url=receiver.url(path), **fields)


def deliveries(api: Api, job_id: int) -> list[dict[str, Any]]:
    response = api.http.get(f"/jobs/{job_id}/deliveries")
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def wait_deliveries(api: Api, job_id: int, path: str, count: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]]:
        mine = [d for d in deliveries(api, job_id) if d["url"].endswith(path)]
        return mine if len(mine) >= count else []

    return wait_for(enough, timeout=20, what=f"{count} deliveries of job {job_id} to {path}")


def event_state(engine: sa.Engine, job_id: int, path: str) -> str:
    with engine.begin() as conn:
        state = conn.execute(
            sa.text("SELECT state FROM callback_events WHERE job_id = :j AND url LIKE :u"),
            {"j": job_id, "u": f"%{path}"},
        ).scalar()
    return str(state or "")  # none yet: the job is not final


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_an_event_is_signed_and_carries_the_job(
    api: Api, receiver: Receiver, log_dir: Path
) -> None:
    job = submit(
        api, "/signed", receiver, command="printf 'the-%s' output", env={"TOKEN": "s3cr3t"}
    )
    (got,) = receiver.wait_count("/signed", 1)
    assert got.verified, got.headers  # by standardwebhooks, with the first secret
    assert got.headers["content-type"] == "application/json"
    signatures = got.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)  # a rotation
    assert got.webhook_id.startswith("msg_") and "." not in got.webhook_id
    event = got.event
    assert event["type"] == "job.succeeded"
    assert event["data"] == api.job(job["id"])
    assert event["data"]["callback_url"] == receiver.url("/signed")
    assert event["timestamp"] == event["data"]["finished_at"]
    assert b"s3cr3t" not in got.body and b"TOKEN" not in got.body  # never the env
    assert b"the-output" not in got.body and event["data"]["output_bytes"] == 10  # nor the output
    # JOBRUNNER_CALLBACK_URL got the same event, with the same webhook-id
    every = [r for r in receiver.wait_count("/every-job", 1) if r.event["data"]["id"] == job["id"]]
    assert [r.webhook_id for r in every] == [got.webhook_id]
    (delivery,) = wait_deliveries(api, job["id"], "/signed", 1)
    assert delivery["status_code"] == 200 and delivery["error"] is None
    assert delivery["next_attempt_at"] is None and delivery["event_id"] == got.webhook_id
    shown = {name: got.headers[name] for name in sorted(got.headers) if name.startswith("webhook")}
    (log_dir / "callback-example.json").write_text(
        json.dumps(
            {
                "headers": shown,
                "raw_body": got.body.decode(),
                "body": event,
                "deliveries": deliveries(api, job["id"]),
            }
        )
    )


def test_500_500_200_is_retried_with_the_same_webhook_id(
    api: Api, receiver: Receiver, engine: sa.Engine, log_dir: Path
) -> None:
    receiver.script("/flaky", [Answer(500), Answer(500), Answer(200)])
    job = submit(api, "/flaky", receiver)
    got = receiver.wait_count("/flaky", 3)
    assert all(r.verified for r in got)
    assert len({r.webhook_id for r in got}) == 1
    first, second, third = (r.at for r in got)
    assert second - first >= BACKOFF_S * 0.9
    assert third - second >= BACKOFF_S * 5 * 0.9  # each delay 5 times the one before
    listed = wait_deliveries(api, job["id"], "/flaky", 3)
    assert [d["attempt"] for d in listed] == [1, 2, 3]
    assert [d["status_code"] for d in listed] == [500, 500, 200]
    assert [d["next_attempt_at"] is None for d in listed] == [False, False, True]
    assert event_state(engine, job["id"], "/flaky") == "delivered"
    assert api.job(job["id"])["state"] == "succeeded"  # delivery never changes the job
    (log_dir / "callback-retried.json").write_text(json.dumps(listed, indent=1))


def test_410_stops_at_once(api: Api, receiver: Receiver, engine: sa.Engine) -> None:
    receiver.script("/gone", [Answer(410), Answer(200)])
    job = submit(api, "/gone", receiver)
    receiver.wait_count("/gone", 1)
    wait_for(lambda: event_state(engine, job["id"], "/gone") == "failed", what="the event given up")
    (only,) = deliveries_to(api, job["id"], "/gone")
    assert only["status_code"] == 410 and only["next_attempt_at"] is None
    assert len(receiver.got("/gone")) == 1


def deliveries_to(api: Api, job_id: int, path: str) -> list[dict[str, Any]]:
    return [d for d in deliveries(api, job_id) if d["url"].endswith(path)]


def test_a_receiver_that_hangs_past_the_timeout_is_tried_again(
    api: Api, receiver: Receiver
) -> None:
    receiver.script("/hangs", [Answer(200, delay=TIMEOUT_S * 3), Answer(200)])
    job = submit(api, "/hangs", receiver)
    got = receiver.wait_count("/hangs", 2)
    assert got[0].webhook_id == got[1].webhook_id
    timed_out, ok = wait_deliveries(api, job["id"], "/hangs", 2)
    assert timed_out["status_code"] is None and "timed out" in timed_out["error"]
    assert ok["status_code"] == 200


def test_retry_after_is_honoured(api: Api, receiver: Receiver) -> None:
    receiver.script("/busy", [Answer(503, headers={"Retry-After": "2"}), Answer(200)])
    job = submit(api, "/busy", receiver)
    first, second = receiver.wait_count("/busy", 2)
    assert second.at - first.at >= 1.9  # not the 0.3 s of the first backoff
    busy, _ = wait_deliveries(api, job["id"], "/busy", 2)
    assert (parse(busy["next_attempt_at"]) - parse(busy["at"])).total_seconds() >= 1.9


def test_redirects_are_not_followed_and_attempts_run_out(
    api: Api, receiver: Receiver, engine: sa.Engine
) -> None:
    moved = Answer(302, headers={"Location": receiver.url("/elsewhere")})
    receiver.script("/moved", [moved] * ATTEMPTS)
    job = submit(api, "/moved", receiver)
    wait_for(lambda: event_state(engine, job["id"], "/moved") == "failed", timeout=30, what="done")
    listed = deliveries_to(api, job["id"], "/moved")
    assert [d["status_code"] for d in listed] == [302] * ATTEMPTS
    assert listed[-1]["next_attempt_at"] is None
    assert receiver.got("/elsewhere") == []


def test_failed_and_cancelled_jobs_notify_once_final(api: Api, receiver: Receiver) -> None:
    failed = submit(api, "/failed", receiver, command="exit 3", max_retries=1)
    (got,) = receiver.wait_count("/failed", 1)  # not for the attempt that was retried
    assert got.event["type"] == "job.failed" and got.event["data"]["id"] == failed["id"]
    assert got.event["data"]["attempts"] == 2 and got.event["data"]["exit_code"] == 3
    waiting = api.submit(
        command="true", queue="nobody-serves-it", callback_url=receiver.url("/cancelled")
    )
    assert api.http.post(f"/jobs/{waiting['id']}/cancel").status_code == 202
    (cancelled,) = receiver.wait_count("/cancelled", 1)
    assert cancelled.event["type"] == "job.cancelled" and cancelled.verified
    assert cancelled.event["data"]["id"] == waiting["id"]
    assert len(receiver.wait_count("/failed", 1)) == 1


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/x",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://[::ffff:10.1.2.3]/",
        "http://127.0.0.2/",  # 127.0.0.1 is allowed, not its neighbours
        "http://localhost:9/",  # nor the names of this machine
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://user:password@127.0.0.1/",
        "not a url",
    ],
)
def test_refused_urls_are_a_422(api: Api, url: str) -> None:
    response = api.http.post("/jobs", json={"command": "true", "queue": QUEUE, "callback_url": url})
    assert response.status_code == 422, response.text
    assert list(response.json()) == ["callback_url"]


def test_deliveries_of_an_unknown_job_are_a_404(api: Api) -> None:
    assert api.http.get("/jobs/999999/deliveries").status_code == 404
    job = api.submit(command="true", queue="nobody-serves-it")
    assert deliveries(api, job["id"]) == []


def test_the_cli_submits_with_a_callback_url(
    api: Api, receiver: Receiver, stack: tuple[str, Process]
) -> None:
    url = receiver.url("/cli")
    done = subprocess.run(
        [JOBRUNNER, "submit", "--queue", QUEUE, "--callback-url", url, "--json", "--", "true"],
        env={"JOBRUNNER_URL": stack[0], "JOBRUNNER_TOKEN": TEST_TOKEN, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)["callback_url"] == url
    (got,) = receiver.wait_count("/cli", 1)
    assert got.verified


def test_the_cli_creates_a_schedule_whose_jobs_call_back(
    api: Api, receiver: Receiver, stack: tuple[str, Process]
) -> None:
    url = receiver.url("/cli-schedule")
    env = {"JOBRUNNER_URL": stack[0], "JOBRUNNER_TOKEN": TEST_TOKEN, "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> str:
        return subprocess.run(
            [JOBRUNNER, *args], env=env, capture_output=True, text=True, check=True
        ).stdout

    name = f"cb-{uuid.uuid4().hex[:8]}"
    made = cli(
        "schedule",
        "create",
        name,
        "--every",
        "1h",
        "-q",
        QUEUE,
        "--callback-url",
        url,
        "--",
        "true",
    )
    schedule_id = int(made)
    try:
        assert (
            json.loads(cli("schedule", "show", str(schedule_id), "--json"))["job"]["callback_url"]
            == url
        )
        job_id = int(cli("schedule", "trigger", str(schedule_id)))
        (got,) = receiver.wait_count("/cli-schedule", 1)
        assert got.verified
        assert (got.event["data"]["id"], got.event["data"]["schedule_id"]) == (job_id, schedule_id)
    finally:
        cli("schedule", "delete", str(schedule_id))


def test_metrics_count_deliveries_and_the_outbox(api: Api, receiver: Receiver) -> None:
    job = submit(api, "/metrics", receiver)
    receiver.wait_count("/metrics", 1)
    wait_deliveries(api, job["id"], "/metrics", 1)

    def scraped() -> str:
        text = api.http.get("/metrics").text
        return text if 'jobrunner_callback_deliveries_total{outcome="delivered"}' in text else ""

    text = wait_for(scraped, timeout=10, what="the delivery counted")
    assert "jobrunner_callback_outbox_oldest_pending_seconds" in text
    assert "jobrunner_callback_outbox_pending" in text


def test_jobrunner_dev_sends_callbacks_too(
    callback_env: dict[str, str], receiver: Receiver, log_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in callback_env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    proc, url = start_dev(env, log_dir, tmp_path / "dev.sqlite3")
    try:
        with Api(url) as dev:
            job = dev.submit(command="true", callback_url=receiver.url("/dev"))
            (got,) = receiver.wait_count("/dev", 1)
            assert got.verified and got.event["data"] == dev.job(job["id"])
            (delivery,) = wait_deliveries(dev, job["id"], "/dev", 1)
            assert delivery["status_code"] == 200
    finally:
        proc.stop()


def test_a_slow_receiver_delays_no_other(api: Api, receiver: Receiver) -> None:
    """Deliveries are bounded per destination (JOBRUNNER_CALLBACK_CONCURRENCY, 4): a receiver
    that answers slowly fills its own slots only, and another one's events go at once."""
    slow = Receiver(SECRET)  # another port of 127.0.0.1: another destination
    try:
        slow.slow["/slow"] = TIMEOUT_S * 0.8
        backlog = [
            api.submit(command="true", queue=QUEUE, callback_url=slow.url("/slow"))
            for _ in range(12)
        ]
        slow.wait_count("/slow", 4)
        fast = submit(api, "/fast", receiver)
        (got,) = receiver.wait_count("/fast", 1)
        finished = parse(api.job(fast["id"])["finished_at"]).timestamp()
        assert got.at - finished < 2.0  # not behind the slow receiver's queue (~2.4 s)
        assert len(slow.got("/slow")) < len(backlog)  # which was still being worked through
        slow.wait_count("/slow", len(backlog), timeout=30)
        assert slow.max_in_flight == 4
    finally:
        slow.close()
