"""JOBRUNNER_MAX_QUEUES and JOBRUNNER_ALLOWED_QUEUES on the in-process app."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from actors.context import WorkerContext
from actors.run_job import keep_queue
from service.config import Settings
from service.web.app import create_app
from tests.support import TEST_TOKEN

LATER = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()


@pytest.fixture
def limited(settings: Settings, worker: WorkerContext) -> Iterator[TestClient]:
    settings = dataclasses.replace(settings, max_queues=3, allowed_queues=("q*", "default"))
    with TestClient(create_app(settings, dispatcher=worker.dispatcher)) as client:
        client.headers["Authorization"] = f"Bearer {TEST_TOKEN}"
        yield client


def post(client: TestClient, queue: str, **fields: object) -> int:
    return client.post("/jobs", json={"command": "true", "queue": queue, **fields}).status_code


def test_a_new_queue_past_the_cap_is_refused_until_one_empties(
    limited: TestClient, worker: WorkerContext
) -> None:
    assert [post(limited, q, run_at=LATER) for q in ("q1", "q2")] == [201, 201]
    assert post(limited, "default") == 201
    refused = limited.post("/jobs", json={"command": "true", "queue": "q4"})
    assert refused.status_code == 422
    assert "JOBRUNNER_MAX_QUEUES" in refused.json()["queue"][0]
    assert post(limited, "q1") == 201  # a queue that holds jobs is fine
    keep_queue(worker, "default")  # empties "default"
    assert post(limited, "q4") == 201


def test_names_outside_the_patterns_are_refused(limited: TestClient) -> None:
    refused = limited.post("/jobs", json={"command": "true", "queue": "other"})
    assert refused.status_code == 422
    assert refused.json()["queue"] == ["is not an allowed queue (allowed: q*, default)"]
