"""`jobrunner schedule ...` and `submit --concurrency-key/--concurrency-limit`, as real
processes against a real server (and worker, for the key)."""

from __future__ import annotations

import json
import uuid

from tests.integration.test_client_cli import run
from tests.support import Api


def test_submit_with_a_concurrency_key(worked_api: Api, web: str) -> None:
    done = run(
        web,
        "submit",
        "--wait",
        "--concurrency-key",
        "cli-key",
        "--concurrency-limit",
        "2",
        "--",
        "true",
    )
    assert done.returncode == 0, done.stderr
    listed = worked_api.http.get("/jobs", params={"concurrency_key": "cli-key"}).json()
    assert [(j["concurrency_key"], j["concurrency_limit"], j["state"]) for j in listed] == [
        ("cli-key", 2, "succeeded")
    ]
    refused = run(web, "submit", "--concurrency-limit", "2", "--", "true")
    assert refused.returncode == 2 and "concurrency_limit" in refused.stderr


def test_the_schedule_commands(api: Api, web: str) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = run(
        web, "schedule", "create", name, "--every", "1h", "-q", "cli-sched", "--", "echo", "hi"
    )
    assert created.returncode == 0, created.stderr
    schedule_id = int(created.stdout)
    listed = run(web, "schedule", "list")
    assert name in listed.stdout and "every 3600s" in listed.stdout
    shown = json.loads(run(web, "schedule", "show", str(schedule_id), "--json").stdout)
    assert shown["job"]["argv"] == ["echo", "hi"] and shown["job"]["queue"] == "cli-sched"
    assert "disabled" in run(web, "schedule", "disable", str(schedule_id)).stdout
    assert api.http.get(f"/schedules/{schedule_id}").json()["next_run_at"] is None
    assert "enabled, next run" in run(web, "schedule", "enable", str(schedule_id)).stdout
    job_id = int(run(web, "schedule", "trigger", str(schedule_id)).stdout)
    assert api.job(job_id)["schedule_id"] == schedule_id
    bad = run(web, "schedule", "create", f"{name}-2", "--cron", "99 * * * *", "--", "true")
    assert bad.returncode == 2 and "cron" in bad.stderr
    twice = run(web, "schedule", "create", name, "--every", "5", "--", "true")
    assert twice.returncode != 0 and "exists" in twice.stderr
    assert run(web, "schedule", "delete", str(schedule_id)).returncode == 0
    gone = run(web, "schedule", "show", str(schedule_id))
    assert gone.returncode != 0 and "no schedule" in gone.stderr
