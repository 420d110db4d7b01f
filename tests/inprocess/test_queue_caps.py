"""JOBRUNNER_QUEUE_CONCURRENCY (API.md section 6): the setting, GET /queues, and the claim of a
capped queue; and concurrency keys in the claim on SQLite (the races across processes are
tests/integration/test_key_race.py's and test_key_workers.py's, on MariaDB)."""

from __future__ import annotations

import dataclasses

import pytest
from starlette.testclient import TestClient

from actors.context import WorkerContext
from service import jobs
from service.config import ConfigError, Settings
from service.web.app import create_app
from service.web.schemas import parse_create
from tests.support import TEST_TOKEN


def test_the_setting() -> None:
    env = {"JOBRUNNER_QUEUE_CONCURRENCY": " reports=2, deploy=1 ,default=1"}
    settings = Settings.from_environ(env)
    assert settings.queue_caps == {"reports": 2, "deploy": 1, "default": 1}
    assert settings.queue_cap("deploy") == 1 and settings.queue_cap("other") is None
    for bad in ("reports", "reports=0", "reports=x", "bad name=1", "=2"):
        with pytest.raises(ConfigError, match="JOBRUNNER_QUEUE_CONCURRENCY"):
            Settings.from_environ({"JOBRUNNER_QUEUE_CONCURRENCY": bad})


def test_queues_show_their_cap(settings: Settings, worker: WorkerContext) -> None:
    capped = dataclasses.replace(settings, queue_concurrency=(("deploy", 1), ("reports", 2)))
    app = create_app(capped, dispatcher=worker.dispatcher)
    headers = {"Authorization": f"Bearer {TEST_TOKEN}"}
    with TestClient(app, base_url="http://testserver", headers=headers) as client:
        client.post("/jobs", json={"command": "true", "queue": "reports"})
        client.post("/jobs", json={"command": "true", "queue": "other"})
        queues = {q["name"]: q for q in client.get("/queues").json()}
    assert queues["deploy"]["concurrency"] == 1 and queues["deploy"]["waiting"] == 0
    assert queues["reports"]["concurrency"] == 2 and queues["reports"]["waiting"] == 1
    assert queues["other"]["concurrency"] is None


def test_a_capped_queue_starts_no_more_than_its_cap(
    settings: Settings, worker: WorkerContext
) -> None:
    for _ in range(3):
        jobs.create(worker.engine, parse_create({"command": "true", "queue": "c"}, settings))
    first = jobs.claim_next(worker.engine, "c", "w", 2)
    second = jobs.claim_next(worker.engine, "c", "w", 2)
    assert first is not None and second is not None
    assert jobs.claim_next(worker.engine, "c", "w", 2) is None
    assert jobs.hand_back(worker.engine, first)
    assert jobs.claim_next(worker.engine, "c", "w", 2) is not None


def test_keys_on_sqlite(settings: Settings, worker: WorkerContext) -> None:
    """The same claim on SQLite (`jobrunner dev`): a full key's jobs are held, the queue goes on,
    and the end of the running one lets the next start."""

    def create(**fields: object) -> int:
        spec = parse_create({"command": "true", "queue": "k", **fields}, settings)
        return jobs.create(worker.engine, spec)[0].id

    first, second = create(concurrency_key="dev"), create(concurrency_key="dev")
    plain = create(priority=9)
    running = jobs.claim_next(worker.engine, "k", "w")
    assert running is not None and running.id == first
    other = jobs.claim_next(worker.engine, "k", "w")
    assert other is not None and other.id == plain
    assert jobs.claim_next(worker.engine, "k", "w") is None
    ok = jobs.Outcome(succeeded=True, exit_code=0)
    policy = settings.retry_policy
    jobs.finish(worker.engine, running, ok, jobs.OutputSnapshot(b"", 0), policy)
    following = jobs.claim_next(worker.engine, "k", "w")
    assert following is not None and following.id == second
