"""Running-per-key gauges (API.md section 6 via issue 17): a series only for keys with running
jobs, at most MAX_KEY_SERIES of them, the rest summed as `_other`."""

from __future__ import annotations

import pytest

from actors.context import WorkerContext
from service import jobs, metrics
from service.config import Settings
from service.web.schemas import parse_create
from tests.support import Api


def running(ctx: WorkerContext, settings: Settings, key: str, queue: str = "km") -> None:
    spec = parse_create({"command": "true", "queue": queue, "concurrency_key": key}, settings)
    jobs.create(ctx.engine, spec)
    assert jobs.claim_next(ctx.engine, queue, "w") is not None


def series(api: Api) -> dict[str, float]:
    text = api.http.get("/metrics").text
    found = {}
    for line in text.splitlines():
        if line.startswith("jobrunner_concurrency_key_running{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('key="', 1)[1].split('"', 1)[0]] = float(value)
    return found


def test_only_keys_in_use_have_a_series(
    api: Api, worker: WorkerContext, settings: Settings
) -> None:
    assert series(api) == {}
    running(worker, settings, "deploy")
    spec = parse_create({"command": "true", "queue": "km", "concurrency_key": "idle"}, settings)
    jobs.create(worker.engine, spec)  # waiting only: no series
    assert series(api) == {"deploy": 1.0}


def test_the_busiest_keys_and_the_rest(
    api: Api, worker: WorkerContext, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "MAX_KEY_SERIES", 2)
    for key, count in (("a", 3), ("b", 2), ("c", 1), ("d", 1)):
        spec = parse_create(
            {"command": "true", "queue": key, "concurrency_key": key, "concurrency_limit": 5},
            settings,
        )
        for _ in range(count):
            jobs.create(worker.engine, spec)
            assert jobs.claim_next(worker.engine, key, "w") is not None
    assert series(api) == {"a": 3.0, "b": 2.0, "_other": 2.0}
