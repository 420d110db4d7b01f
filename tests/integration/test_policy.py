"""The command policy on a real server and worker: 403 before storing, and a worker that
refuses what slipped in before the policy was set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Api, Process, start_web, start_worker


@pytest.fixture
def policy_env(base_env: dict[str, str]) -> dict[str, str]:
    return dict(base_env, JOBRUNNER_ALLOWED_COMMANDS="bin/*", JOBRUNNER_ALLOWED_ENV="APP_*")


@pytest.fixture
def policy_api(policy_env: dict[str, str], log_dir: Path, clean_db: None) -> Iterator[Api]:
    web, url = start_web(policy_env, log_dir)
    with Api(url) as api:
        yield api
    web.stop()


@pytest.fixture
def policy_worker(policy_env: dict[str, str], log_dir: Path) -> Iterator[Process]:
    worker = start_worker(policy_env, log_dir, "policy", WORKER_QUEUES="policy")
    yield worker
    worker.stop()


def test_a_refused_command_gets_403_and_is_never_stored(policy_api: Api) -> None:
    refused = [
        {"command": "bin/hello_world.sh; rm -rf /"},
        {"command": "bin/hello_world.sh $(id)"},
        {"command": "rm -rf /"},
        {"argv": ["/bin/sh", "-c", "bin/hello_world.sh"]},
        {"command": "bin/hello_world.sh", "env": {"LD_PRELOAD": "/tmp/x.so"}},
        # names that no deny-list named: under a policy only the allowed ones pass
        {"command": "bin/hello_world.sh", "env": {"MAKEFLAGS": "--eval=x", "SHELL": "/bin/sh"}},
        {"command": "bin/hello_world.sh", "env": {"JDK_JAVA_OPTIONS": "-XX:OnError=id"}},
        {"command": "bin/hello_world.sh", "env": {"HOME": "/tmp"}},
        # an allowed name with a value, or an argv item, no command line could hold
        {"command": "bin/hello_world.sh", "env": {"APP_FLAGS": "--eval=$(shell id)"}},
        {"argv": ["bin/hello_world.sh", "--eval=$(shell id)"]},
    ]
    for body in refused:
        response = policy_api.http.post("/jobs", json=dict(body, queue="policy"))
        assert response.status_code == 403, body
        assert "policy" in response.json()["error"]
    assert policy_api.http.get("/jobs").json() == []


def test_an_allowed_command_runs_and_cannot_be_edited_into_a_refused_one(
    policy_api: Api, policy_worker: Process
) -> None:
    later = "2999-01-01T00:00:00Z"
    waiting = policy_api.submit(command="bin/hello_world.sh", queue="policy", run_at=later)
    edit = policy_api.http.patch(f"/jobs/{waiting['id']}", json={"command": "rm -rf /"})
    assert edit.status_code == 403
    assert policy_api.job(waiting["id"])["command"] == "bin/hello_world.sh"

    job = policy_api.submit(command="bin/hello_world.sh", queue="policy", env={"APP_MODE": "x"})
    assert policy_api.wait(job["id"])["state"] == "succeeded"
    assert policy_api.output(job["id"]) == "Hello,\nworld!\n"


def test_the_worker_refuses_a_job_stored_before_the_policy(
    api: Api, policy_api: Api, policy_worker: Process
) -> None:
    job = api.submit(command="echo pwned", queue="policy")  # through the open server
    final = policy_api.wait(job["id"])
    assert final["state"] == "failed"
    assert final["last_error"].startswith("could not start:")
    assert "not allowed by the command policy" in final["last_error"]
    assert policy_api.output(job["id"]) == ""
