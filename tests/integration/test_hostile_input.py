"""One bad request hurts only its sender, on real servers: valid requests sent together with
bad ones all succeed, the bad ones get their 422; a batch that MariaDB refuses fails only the
request that caused it; a path full of control characters cannot forge a log line."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import sqlalchemy as sa

from service.broker import make_broker
from service.config import Settings
from service.db import create_engine
from service.dispatch import dispatcher_for
from service.errors import DatabaseUnavailable, RejectedByDatabase
from service.web.submit import Submitter
from service.workers import NamedQueues
from tests.inprocess.test_hostile_input import _spec, submit_in_one_batch
from tests.support import AUTH, Api, both_backends, wait_for

ROUNDS = 10
VALID_PER_ROUND = 50
#: the three bad requests of each round, and the field each 422 must name
BAD = [
    ("command", {"command": "echo \ud800"}),
    ("argv", {"argv": ["echo", "\ud800"]}),
    ("env", {"command": "true", "env": {"SECRET": "\ud800"}}),
]


@both_backends
def test_bad_requests_among_concurrent_valid_ones_fail_alone(api: Api) -> None:
    valid = json.dumps({"command": "true", "queue": "hostile"}).encode()
    bodies = [(None, valid)] * VALID_PER_ROUND + [
        (field, json.dumps(dict(body, queue="hostile")).encode()) for field, body in BAD
    ]
    headers = {**AUTH, "content-type": "application/json"}

    def post(client: httpx.Client, body: bytes) -> httpx.Response:
        return client.post("/jobs", content=body, headers=headers)

    failed_valid: list[str] = []
    with (
        httpx.Client(
            base_url=api.base_url, timeout=30, limits=httpx.Limits(max_connections=60)
        ) as client,
        ThreadPoolExecutor(len(bodies)) as pool,
    ):
        for _ in range(ROUNDS):
            responses = list(pool.map(lambda item: post(client, item[1]), bodies))
            for (field, _body), response in zip(bodies, responses, strict=True):
                if field is None:
                    if response.status_code != 201:
                        failed_valid.append(f"{response.status_code} {response.text[:200]}")
                else:
                    assert response.status_code == 422, response.text
                    assert list(response.json()) == [field]
    assert failed_valid == []
    assert len(api.http.get("/jobs", params={"limit": 1000}).json()) == ROUNDS * VALID_PER_ROUND


def _submitter(base_env: dict[str, str], engine: sa.Engine) -> Submitter:
    settings = Settings.from_environ(base_env)
    named = NamedQueues(engine, settings.lease_timeout)
    return Submitter(engine, dispatcher_for(make_broker(settings), settings, named))


def test_a_batch_mariadb_refuses_fails_only_the_requests_that_caused_it(
    base_env: dict[str, str], engine: sa.Engine, clean_db: None
) -> None:
    specs = [_spec(command=f"echo {n}") for n in range(8)]
    specs[2] = _spec(env={"A": "\ud800"})  # MariaDB's JSON CHECK refuses it (error 4025)
    specs[5] = _spec(command="echo \ud800")  # mysqlclient cannot encode it
    specs[6] = _spec(argv=["echo", "\udc80"], command="echo")  # 4025 again
    results = submit_in_one_batch(_submitter(base_env, engine), specs)
    for n in (2, 5, 6):
        assert isinstance(results[n], RejectedByDatabase), results[n]
        assert results[n].status_code == 422
    assert all(isinstance(results[n], tuple) for n in (0, 1, 3, 4, 7)), results
    with engine.begin() as conn:
        commands = conn.execute(sa.text("SELECT command FROM jobs ORDER BY id")).scalars().all()
    assert commands == [f"echo {n}" for n in (0, 1, 3, 4, 7)]


def test_an_outage_is_the_only_503(base_env: dict[str, str]) -> None:
    away = create_engine("mysql+mysqldb://root@127.0.0.1:1/jobrunner", pool_size=1)
    try:
        results = submit_in_one_batch(_submitter(base_env, away), [_spec()] * 5)
    finally:
        away.dispose()
    assert all(isinstance(r, DatabaseUnavailable) and r.status_code == 503 for r in results)


def test_control_characters_in_a_path_cannot_forge_a_log_line(api: Api, log_dir: Path) -> None:
    marker = "forgery-" + str(id(api))
    paths = [
        f"/{marker}%0d%0atimestamp=2026-12-01T00:00:00Z%20event=request%20path=/jobs%20status=201",
        f"/{marker}%0dtimestamp=x%20event=request%20status=201",
        f"/{marker}%1b[2K%1b[1Gevent=request%20status=201",
        f"/{marker}%00%7f%c2%85%e2%80%a8",
    ]
    for path in paths:
        response = httpx.get(api.base_url + path)  # no token: 401, and logged
        assert response.status_code == 401

    def lines() -> list[str]:
        return [
            line
            for log in log_dir.glob("*.log")
            for line in log.read_text(errors="replace").splitlines()
            if marker in line
        ]

    logged = wait_for(lambda: len(lines()) >= len(paths) and lines(), what="the request lines")
    assert len(logged) == len(paths), logged
    for line in logged:
        assert line.startswith("timestamp=") and "status=401" in line, line
        assert line.isprintable(), line
    every = [
        line
        for log in log_dir.glob("*.log")
        for line in log.read_text(errors="replace").splitlines()
    ]
    assert not any(re.match(r"timestamp=2026-12-01T00:00:00Z", line) for line in every)
