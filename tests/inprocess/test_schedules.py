"""Schedules through the API and the sweeper's ticks (API.md section 7), on SQLite: every bad
input is a 422 (403 for the policy, 409 for a taken name) naming its field, and leaves no
schedule behind; ticks make one job each, a missed stretch makes one, overlap skips."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from actors.context import WorkerContext
from actors.run_job import keep_queue
from actors.sweeper import Sweeper
from service import db, schedules
from service.config import Settings
from service.db import utcnow
from service.web.app import create_app
from tests.support import TEST_TOKEN, Api

JOB = {"command": "true", "queue": "sched"}


def new(api: Api, **fields: Any) -> dict[str, Any]:
    body = {"name": "nightly", "every": 60, "job": JOB} | fields
    response = api.http.post("/schedules", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/schedules/{response.json()['id']}"
    return response.json()


def count(engine: sa.Engine, table: str) -> int:
    with engine.begin() as conn:
        return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def test_create_read_list_change_delete(api: Api, engine: sa.Engine) -> None:
    created = new(api, name="b-report", cron="30 2 * * *", every=None, timezone="Europe/Berlin")
    assert created["cron"] == "30 2 * * *" and created["every"] is None
    assert created["enabled"] is True and created["overlap"] == "skip"
    assert created["next_run_at"].endswith("Z") and created["last_job_id"] is None
    assert created["job"]["command"] == "true" and created["job"]["queue"] == "sched"
    other = new(api, name="a-first", every=5)
    names = [s["name"] for s in api.http.get("/schedules").json()]
    assert names == ["a-first", "b-report"]  # by name
    assert api.http.get(f"/schedules/{other['id']}").json() == other
    changed = api.http.patch(f"/schedules/{other['id']}", json={"enabled": False})
    assert changed.status_code == 200 and changed.json()["next_run_at"] is None
    again = api.http.patch(f"/schedules/{other['id']}", json={"enabled": True, "every": 7})
    assert again.json()["every"] == 7 and again.json()["next_run_at"] is not None
    to_cron = api.http.patch(f"/schedules/{other['id']}", json={"cron": "*/5 * * * *"})
    assert (to_cron.json()["cron"], to_cron.json()["every"]) == ("*/5 * * * *", None)
    job = api.http.post(f"/schedules/{other['id']}/trigger")
    assert job.status_code == 201 and job.json()["schedule_id"] == other["id"]
    assert api.http.delete(f"/schedules/{other['id']}").status_code == 204
    assert api.http.get(f"/schedules/{other['id']}").status_code == 404
    assert api.http.delete(f"/schedules/{other['id']}").status_code == 404
    assert api.job(job.json()["id"])["schedule_id"] == other["id"]  # its jobs stay
    listed = api.http.get("/jobs", params={"schedule_id": other["id"]}).json()
    assert [j["id"] for j in listed] == [job.json()["id"]]


def test_env_is_never_shown(api: Api) -> None:
    created = new(api, job={"command": "true", "env": {"TOKEN": "s3cret"}})
    assert "s3cret" not in str(created)
    assert created["job"]["env"] == ["TOKEN"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "cron": "61 * * * *", "job": JOB}, "cron"),
        ({"name": "x", "cron": "* * * *", "job": JOB}, "cron"),
        ({"name": "x", "cron": "* * * * * *", "job": JOB}, "cron"),
        ({"name": "x", "cron": "* * * * *", "every": 5, "job": JOB}, "every"),
        ({"name": "x", "job": JOB}, "cron"),
        ({"name": "x", "every": 0, "job": JOB}, "every"),
        ({"name": "x", "every": "5", "job": JOB}, "every"),
        ({"name": "x", "every": 5, "timezone": "Mars/Olympus", "job": JOB}, "timezone"),
        ({"name": "x", "every": 5, "timezone": "../../etc/passwd", "job": JOB}, "timezone"),
        ({"name": "x", "every": 5}, "job"),
        ({"name": "x", "every": 5, "job": "true"}, "job"),
        ({"name": "x", "every": 5, "job": {"queue": "q"}}, "job.command"),
        ({"name": "x", "every": 5, "job": {"command": "true", "priority": "1"}}, "job.priority"),
        (
            {"name": "x", "every": 5, "job": {"command": "true", "run_at": "2030-01-01"}},
            "job.run_at",
        ),
        (
            {"name": "x", "every": 5, "job": {"command": "t", "concurrency_limit": 2}},
            "job.concurrency_limit",
        ),
        ({"every": 5, "job": JOB}, "name"),
        ({"name": " ", "every": 5, "job": JOB}, "name"),
        ({"name": "x", "every": 5, "job": JOB, "overlap": "sometimes"}, "overlap"),
        ({"name": "x", "every": 5, "job": JOB, "enabled": "yes"}, "enabled"),
        ({"name": "x", "every": 5, "job": JOB, "colour": "red"}, "colour"),
    ],
)
def test_bad_input_names_the_field_and_creates_nothing(
    api: Api, engine: sa.Engine, body: dict[str, Any], field: str
) -> None:
    response = api.http.post("/schedules", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json(), response.json()
    assert count(engine, "schedules") == 0 and count(engine, "jobs") == 0


def test_a_duplicate_name_is_409(api: Api, engine: sa.Engine) -> None:
    first = new(api)
    response = api.http.post("/schedules", json={"name": "nightly", "every": 5, "job": JOB})
    assert response.status_code == 409 and "nightly" in response.json()["error"]
    other = new(api, name="other")
    renamed = api.http.patch(f"/schedules/{other['id']}", json={"name": "nightly"})
    assert renamed.status_code == 409
    assert count(engine, "schedules") == 2 and first["id"] != other["id"]


def test_bad_changes_change_nothing(api: Api) -> None:
    created = new(api)
    for body, field in (
        ({"cron": "bad"}, "cron"),
        ({"cron": "* * * * *", "every": 5}, "every"),
        ({"timezone": "Nowhere/Else"}, "timezone"),
        ({"job": {"command": ""}}, "job.command"),
        ({}, "schedule"),
        ({"name": None}, "name"),
    ):
        response = api.http.patch(f"/schedules/{created['id']}", json=body)
        assert response.status_code == 422 and field in response.json(), (body, response.text)
    assert api.http.get(f"/schedules/{created['id']}").json() == created


def test_the_command_policy_refuses_a_template_with_403(
    settings: Settings, worker: WorkerContext, engine: sa.Engine
) -> None:
    strict = dataclasses.replace(settings, allowed_commands=("bin/",))
    app = create_app(strict, dispatcher=worker.dispatcher)
    with TestClient(app, base_url="http://testserver") as client:
        api = Api.__new__(Api)
        api.http = client
        client.headers["Authorization"] = f"Bearer {TEST_TOKEN}"
        body = {"name": "x", "every": 5, "job": {"command": "rm -rf /"}}
        assert client.post("/schedules", json=body).status_code == 403
        assert count(engine, "schedules") == 0
        ok = {"name": "x", "every": 5, "job": {"command": "bin/hello_world.sh"}}
        created = client.post("/schedules", json=ok)
        assert created.status_code == 201
        refused = client.patch(f"/schedules/{created.json()['id']}", json=body)
        assert refused.status_code == 403
        shown = client.get(f"/schedules/{created.json()['id']}").json()
        assert shown["job"]["command"] == "bin/hello_world.sh"


def test_ticks_make_one_job_each_and_a_missed_stretch_makes_one(
    api: Api, engine: sa.Engine, worker: WorkerContext
) -> None:
    created = new(api, every=10)
    with engine.begin() as conn:
        first = schedules.require(conn, created["id"]).next_run_at
    assert first is not None
    assert schedules.tick(engine, first - dt.timedelta(seconds=1)) == []  # not yet
    taken = schedules.tick(engine, first)
    assert len(taken) == 1 and taken[0].job is not None
    assert schedules.tick(engine, first) == []  # that tick is taken
    job = taken[0].job
    assert (job.schedule_id, job.queue, job.state) == (created["id"], "sched", "queued")
    keep_queue(worker, "sched")  # it runs and ends: the next may come
    assert api.job(job.id)["state"] == "succeeded"
    # an hour with no scheduler: one job, and the next tick after now, on the same phase
    late = first + dt.timedelta(seconds=3600 + 3)
    again = schedules.tick(engine, late)
    assert len(again) == 1 and again[0].job is not None
    assert schedules.tick(engine, late) == []
    with engine.begin() as conn:
        shown = schedules.require(conn, created["id"])
    assert shown.next_run_at == first + dt.timedelta(seconds=3610)
    assert shown.last_job_id == again[0].job.id


def test_overlap_skip_waits_for_the_last_job_allow_does_not(api: Api, engine: sa.Engine) -> None:
    skip = new(api, name="skip", every=1)
    allow = new(api, name="allow", every=1, overlap="allow")
    now = utcnow() + dt.timedelta(seconds=2)
    taken = {t.schedule_id: t for t in schedules.tick(engine, now)}
    assert taken[skip["id"]].job is not None and taken[allow["id"]].job is not None
    later = {t.schedule_id: t for t in schedules.tick(engine, now + dt.timedelta(seconds=2))}
    assert later[skip["id"]].job is None  # its last job is still queued: skipped
    assert later[allow["id"]].job is not None
    # trigger ignores overlap, and works on a disabled schedule
    api.http.patch(f"/schedules/{skip['id']}", json={"enabled": False})
    assert api.http.post(f"/schedules/{skip['id']}/trigger").status_code == 201
    assert len(api.http.get("/jobs", params={"schedule_id": skip["id"]}).json()) == 2


def test_the_sweeper_ticks_and_wakes_the_queue(api: Api, worker: WorkerContext) -> None:
    created = new(api, every=1)
    with worker.engine.begin() as conn:
        conn.execute(
            db.schedules.update()
            .where(db.schedules.c.id == created["id"])
            .values(next_run_at=utcnow() - dt.timedelta(seconds=1))
        )
    Sweeper(worker).run_schedules()
    jobs = api.http.get("/jobs", params={"schedule_id": created["id"]}).json()
    assert len(jobs) == 1
    assert keep_queue(worker, "sched") == 1
    assert api.job(jobs[0]["id"])["state"] == "succeeded"


def test_cron_follows_daylight_saving_as_cron_does() -> None:
    berlin = schedules.Timing("30 2 * * *", None, "Europe/Berlin")
    # 29 March 2026: clocks go from 02:00 to 03:00 CET->CEST; 02:30 does not exist that day
    before = dt.datetime(2026, 3, 28, 12, 0)  # UTC
    spring = berlin.first(before)
    assert spring == dt.datetime(2026, 3, 29, 1, 0)  # 03:00 CEST, right after the jump
    assert berlin.after(spring, spring) == dt.datetime(2026, 3, 30, 0, 30)  # 02:30 CEST
    # 25 October 2026: 02:30 happens twice (CEST, then CET): one run only
    autumn = berlin.first(dt.datetime(2026, 10, 24, 12, 0))
    assert autumn == dt.datetime(2026, 10, 25, 0, 30)  # 02:30 CEST
    assert berlin.after(autumn, autumn) == dt.datetime(2026, 10, 26, 1, 30)  # 02:30 CET
    hourly = schedules.Timing("0 * * * *", None, "America/New_York")
    # 1 November 2026, 01:00 EDT then 01:00 EST: every real hour runs
    one = hourly.first(dt.datetime(2026, 11, 1, 4, 30))
    assert (one, hourly.after(one, one)) == (
        dt.datetime(2026, 11, 1, 5, 0),
        dt.datetime(2026, 11, 1, 6, 0),
    )
