"""Schedules run by the real roles (API.md section 7): the worker role's sweeper (MariaDB and
Redis) and `jobrunner dev` (SQLite) tick them; their jobs run; a deleted schedule's jobs stay."""

from __future__ import annotations

from tests.support import PROCESS_DEADLINE, Api, both_backends, wait_for


@both_backends
def test_a_schedule_every_second_creates_jobs_that_run(worked_api: Api) -> None:
    body = {"name": f"live-{id(worked_api)}", "every": 1, "job": {"command": "echo tick"}}
    created = worked_api.http.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    schedule = created.json()
    try:

        def jobs() -> list[dict]:  # type: ignore[type-arg]
            params = {"schedule_id": schedule["id"]}
            return worked_api.http.get("/jobs", params=params).json()

        made = wait_for(lambda: len(jobs()) >= 3 and jobs(), timeout=PROCESS_DEADLINE)
        for job in made[:3]:
            done = worked_api.wait(job["id"])
            assert done["state"] == "succeeded" and worked_api.output(job["id"]) == "tick\n"
        shown = worked_api.http.get(f"/schedules/{schedule['id']}").json()
        assert shown["last_job_id"] >= made[2]["id"] and shown["last_run_at"] is not None
        # one job a second, not more (skip: never two of this schedule at once)
        created_at = [job["created_at"] for job in made[:3]]
        assert len(set(created_at)) == 3
    finally:
        worked_api.http.delete(f"/schedules/{schedule['id']}")
    assert jobs(), "its jobs stay"
