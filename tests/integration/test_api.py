"""The HTTP API against real servers (no worker on the tests' queues: jobs stay waiting), each
test twice: `jobrunner web` on MariaDB and Redis, and `jobrunner dev` on SQLite."""

from __future__ import annotations

import concurrent.futures
import datetime as dt

import httpx
import pytest

from tests.support import AUTH, Api, both_backends

pytestmark = both_backends

JOB_FIELDS = {
    "id",
    "command",
    "argv",
    "queue",
    "priority",
    "state",
    "attempts",
    "max_retries",
    "timeout",
    "exit_code",
    "last_error",
    "run_at",
    "locked_at",
    "locked_by",
    "started_at",
    "finished_at",
    "failed_at",
    "created_at",
    "updated_at",
    "cancel_requested",
    "output_bytes",
    "output_truncated",
    "end_reason",
    "exit_signal",
    "concurrency_key",
    "concurrency_limit",
    "schedule_id",
    "callback_url",
}


def test_create_with_the_originals_form_fields(api: Api) -> None:
    response = api.http.post(
        "/jobs",
        data={
            "job[command]": "bin/hello_world.sh",
            "job[priority]": "3",
            "job[queue]": "alpha",
            "utf8": "✓",
            "commit": "Create Job",
        },
    )
    assert response.status_code == 201
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert JOB_FIELDS <= set(job)
    assert (job["command"], job["priority"], job["queue"], job["state"]) == (
        "bin/hello_world.sh",
        3,
        "alpha",
        "queued",
    )
    assert job["created_at"].endswith("Z") and len(job["created_at"]) == 24
    assert "env" not in job


def test_create_with_wrapped_and_bare_json(api: Api) -> None:
    wrapped = api.http.post("/jobs", json={"job": {"command": "true", "timeout": 5}})
    bare = api.http.post("/jobs", json={"argv": ["echo", "a b"], "max_retries": 2})
    assert wrapped.status_code == bare.status_code == 201
    assert wrapped.json()["timeout"] == 5
    assert bare.json()["command"] == "echo 'a b'"
    assert bare.json()["argv"] == ["echo", "a b"]
    assert bare.json()["max_retries"] == 2


def test_form_argv_and_env_in_rails_style(api: Api) -> None:
    response = api.http.post(
        "/jobs",
        content="job[argv][]=printf&job[argv][]=%s&job[argv][]=x&job[env][A]=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["argv"] == ["printf", "%s", "x"]


def test_a_blank_command_gets_the_originals_422(api: Api) -> None:
    for body in ({"job": {"command": ""}}, {"job": {"priority": 1}}, {}):
        response = api.http.post("/jobs", json=body)
        assert response.status_code == 422
        assert response.json() == {"command": ["can't be blank"]}
    response = api.http.post("/jobs", data={"job[command]": "  "})
    assert response.json() == {"command": ["can't be blank"]}


def test_server_owned_fields_are_not_taken_from_the_client(api: Api) -> None:
    job = api.submit(command="true", state="succeeded", attempts=7, id=999999, exit_code=0)
    assert job["state"] == "queued" and job["attempts"] == 0 and job["exit_code"] is None
    assert job["id"] != 999999


def test_env_values_are_never_returned(api: Api) -> None:
    job = api.submit(command="true", env={"API_KEY": "hunter2"})
    assert "hunter2" not in api.http.get(f"/jobs/{job['id']}").text
    assert "hunter2" not in api.http.get("/jobs").text


def test_show_and_json_suffix_and_404(api: Api) -> None:
    job = api.submit(command="true")
    assert api.http.get(f"/jobs/{job['id']}").json() == job
    assert api.http.get(f"/jobs/{job['id']}.json").json() == job
    assert api.http.get("/jobs.json").json() == [job]
    for path in ("/jobs/0", "/jobs/abc", "/jobs/99999999999999999999999", "/jobs/-1", "/nope"):
        response = api.http.get(path)
        assert response.status_code == 404, path
        assert "error" in response.json()


def test_list_filters_order_and_pagination(api: Api) -> None:
    ids = [api.submit(command="true", queue="alpha" if i % 2 else "beta")["id"] for i in range(7)]
    everything = api.http.get("/jobs").json()
    assert [job["id"] for job in everything] == ids
    alpha = api.http.get("/jobs", params={"queue": "alpha"}).json()
    assert [job["id"] for job in alpha] == ids[1::2]
    assert api.http.get("/jobs", params={"state": "running"}).json() == []
    assert len(api.http.get("/jobs", params={"state": "queued"}).json()) == 7

    first = api.http.get("/jobs", params={"limit": 3, "queue": "beta"})
    assert [job["id"] for job in first.json()] == ids[0::2][:3]
    link = first.headers["link"]
    assert link.endswith('rel="next"') and "queue=beta" in link and f"after={ids[4]}" in link
    second = api.http.get(link[1 : link.index(">")])
    assert [job["id"] for job in second.json()] == ids[0::2][3:]
    assert "link" not in second.headers

    newest = api.http.get("/jobs", params={"order": "desc", "limit": 2}).json()
    assert [job["id"] for job in newest] == ids[::-1][:2]


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 1001}, {"after": "x"}, {"state": "bogus"}, {"order": "up"}]
)
def test_bad_list_parameters_are_422(api: Api, params: dict) -> None:
    response = api.http.get("/jobs", params=params)
    assert response.status_code == 422
    assert set(response.json()) == set(params)


def test_edit_a_waiting_job(api: Api) -> None:
    job = api.submit(command="true")
    response = api.http.put(
        f"/jobs/{job['id']}", data={"job[priority]": "5", "job[command]": "echo x"}
    )
    assert response.status_code == 204
    response = api.http.patch(f"/jobs/{job['id']}.json", json={"job": {"queue": "beta"}})
    assert response.status_code == 204
    edited = api.job(job["id"])
    assert (edited["priority"], edited["command"], edited["queue"]) == (5, "echo x", "beta")
    assert api.http.patch(f"/jobs/{job['id']}", json={"priority": "high"}).status_code == 422
    assert api.http.patch("/jobs/999999", json={"priority": 1}).status_code == 404


def test_edit_run_at_moves_between_scheduled_and_queued(api: Api) -> None:
    job = api.submit(command="true")
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert api.http.patch(f"/jobs/{job['id']}", json={"run_at": later}).status_code == 204
    assert api.job(job["id"])["state"] == "scheduled"
    now = dt.datetime.now(dt.UTC).isoformat()
    assert api.http.patch(f"/jobs/{job['id']}", json={"run_at": now}).status_code == 204
    assert api.job(job["id"])["state"] == "queued"


def test_a_scheduled_job_waits_for_its_time(api: Api) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    job = api.submit(command="true", run_at=later)
    assert job["state"] == "scheduled"
    assert job["run_at"].startswith(later[:-1])


def test_cancel_a_waiting_job_then_retry_it(api: Api) -> None:
    job = api.submit(command="true")
    response = api.http.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    cancelled = response.json()
    assert (cancelled["state"], cancelled["last_error"]) == ("cancelled", "cancelled")
    assert cancelled["finished_at"] is not None
    conflict = api.http.post(f"/jobs/{job['id']}/cancel")
    assert conflict.status_code == 409 and "cancelled" in conflict.json()["error"]
    assert api.http.put(f"/jobs/{job['id']}", json={"priority": 1}).status_code == 409

    retried = api.http.post(f"/jobs/{job['id']}/retry")
    assert retried.status_code == 202
    assert (retried.json()["state"], retried.json()["finished_at"]) == ("queued", None)
    assert api.http.post(f"/jobs/{job['id']}/retry").status_code == 409
    assert api.http.post("/jobs/999999/cancel").status_code == 404


def test_delete(api: Api) -> None:
    job = api.submit(command="true")
    assert api.http.delete(f"/jobs/{job['id']}").status_code == 204
    assert api.http.get(f"/jobs/{job['id']}").status_code == 404
    assert api.http.delete(f"/jobs/{job['id']}.json").status_code == 404


def test_output_of_a_job_that_has_not_run(api: Api) -> None:
    job = api.submit(command="true")
    response = api.http.get(f"/jobs/{job['id']}/output")
    assert response.status_code == 200
    assert response.text == ""
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-output-truncated"] == "false"
    assert api.http.get("/jobs/999999/output").status_code == 404


def test_idempotency_key_returns_the_first_job(api: Api) -> None:
    headers = {"Idempotency-Key": "deploy-2026-11-28-001"}
    first = api.http.post("/jobs", json={"command": "true"}, headers=headers)
    again = api.http.post("/jobs", json={"command": "true"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert len(api.http.get("/jobs").json()) == 1
    bad = api.http.post("/jobs", json={"command": "true"}, headers={"Idempotency-Key": "a b"})
    assert bad.status_code == 422
    assert bad.json() == {"Idempotency-Key": ["must be 1 to 255 visible ASCII characters"]}


def test_idempotency_key_under_concurrent_requests(api: Api) -> None:
    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{api.base_url}/jobs",
            json={"command": "true"},
            headers={"Idempotency-Key": "race", **AUTH},
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in responses}) == 1


def test_malformed_json_is_400_and_stores_nothing(api: Api) -> None:
    for body in (b'{"command": "true"', b"\xff\xfe", b"[" * 100000):
        response = api.http.post(
            "/jobs", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert "malformed JSON" in response.json()["error"]
    not_an_object = api.http.post("/jobs", json=["true"])
    assert not_an_object.status_code == 422
    assert api.http.get("/jobs").json() == []


def test_wrong_content_type_is_415(api: Api) -> None:
    response = api.http.post(
        "/jobs", content=b"command=true", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415
    assert "content type" in response.json()["error"]


def test_oversize_body_is_413_also_when_chunked(api: Api) -> None:
    big = {"command": "echo " + "x" * (1024 * 1024)}
    response = api.http.post("/jobs", json=big)
    assert response.status_code == 413
    assert "error" in response.json()

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"command": "echo '
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    response = api.http.post(
        "/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert api.http.get("/jobs").json() == []


def test_wrong_method_is_405_with_allow(api: Api) -> None:
    response = api.http.delete("/jobs")
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert "error" in response.json()


def test_health_readiness_and_openapi(api: Api) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok"}
    ready = api.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok", "broker": "ok"}
    document = api.http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/cancel", "/jobs/{job_id}/output"} <= set(
        document["paths"]
    )
    assert set(document["components"]["schemas"]["Job"]["required"]) == JOB_FIELDS
