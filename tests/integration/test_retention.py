"""Retention by outcome with a real worker: JOBRUNNER_RETENTION_SUCCEEDED=0 deletes a job as
soon as it succeeds (clients of the original poll until 404), keeps the failed ones, and a
follower still learns how it ended."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_follow import SSE, events, gated
from tests.support import Api, Process, start_worker, wait_for


@pytest.fixture
def deleting_worker(base_env: dict[str, str], log_dir: Path) -> Iterator[Process]:
    env = dict(base_env, JOBRUNNER_RETENTION_SUCCEEDED="0")
    worker = start_worker(env, log_dir, "retention", WORKER_QUEUES="retention")
    yield worker
    worker.stop()


def test_a_succeeded_job_is_gone_at_once_and_its_follower_learns_it_succeeded(
    api: Api, deleting_worker: Process, tmp_path: Path
) -> None:
    failing = api.submit(command="exit 3", queue="retention")
    command, gate = gated(tmp_path)
    job = api.submit(command=command, queue="retention")
    url = f"{api.base_url}/jobs/{job['id']}/output?follow=1"
    with httpx.stream("GET", url, headers=SSE, timeout=30) as response:
        lines = response.iter_lines()
        received = []
        for event in events(lines):
            received.append(event)
            if event["event"] == "output":
                gate.touch()
    assert json.loads(received[-1]["data"]) == {
        "state": "succeeded",
        "exit_code": 0,
        "last_error": None,
    }
    assert "".join(json.loads(e["data"]) for e in received if e["event"] == "output").startswith(
        "first"
    )
    assert api.http.get(f"/jobs/{job['id']}").status_code == 404  # as delayed_job did
    wait_for(lambda: api.job(failing["id"])["state"] == "failed", what="the failing job")
