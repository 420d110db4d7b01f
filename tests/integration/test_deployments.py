"""Two deployments on one Redis server: nothing crosses (channels, messages, cancels)."""

from __future__ import annotations

import concurrent.futures
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa

from service.migrate import apply_migrations
from tests.conftest import MYSQL_SERVER, REDIS_URL
from tests.support import AUTH, JOBRUNNER, Api, Process, start_web, start_worker, stop_all

LINES = "for i in 1 2 3 4 5 6; do echo {name}$i; sleep 0.2; done"


def deployment_id(url: str) -> str:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SELECT id FROM deployment").scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def databases() -> Iterator[list[str]]:
    names = [f"jobrunner_deploy_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    urls = [f"{MYSQL_SERVER}/{name}" for name in names]
    for url in urls:
        apply_migrations(url)
    yield urls
    client = redis.Redis.from_url(REDIS_URL)
    for url in urls:  # the namespaces the deployments took for themselves
        keys = list(client.scan_iter(f"jobrunner-{deployment_id(url)[:16]}*"))
        if keys:
            client.delete(*keys)
    client.close()
    server = sa.create_engine(MYSQL_SERVER, poolclass=sa.pool.NullPool)
    with server.connect() as conn:
        for name in names:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    server.dispose()


def follow(api: Api, job_id: int) -> list[str]:
    url = f"{api.base_url}/jobs/{job_id}/output?follow=1"
    with httpx.stream("GET", url, headers=AUTH, timeout=30) as response:
        return list(response.iter_lines())


def test_two_deployments_on_one_redis_see_nothing_of_each_other(
    databases: list[str], base_env: dict[str, str], log_dir: Path
) -> None:
    # no JOBRUNNER_REDIS_NAMESPACE: each deployment takes its own from its database
    env = {k: v for k, v in base_env.items() if k != "JOBRUNNER_REDIS_NAMESPACE"}
    started: list[Process] = []
    apis: list[Api] = []
    try:
        for name, url in zip("AB", databases[:2], strict=True):
            web, web_url = start_web(dict(env, DATABASE_URL=url), log_dir)
            worker = start_worker(dict(env, DATABASE_URL=url), log_dir, f"deploy-{name}")
            started += [web, worker]
            apis.append(Api(web_url))
        a, b = apis
        # the same job ids in both: 1 prints lines, 2 sleeps
        first = [
            api.submit(command=LINES.format(name=n))["id"]
            for api, n in zip(apis, "AB", strict=True)
        ]
        assert first[0] == first[1]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            outputs = list(pool.map(follow, apis, first))
        assert outputs == [[f"A{i}" for i in range(1, 7)], [f"B{i}" for i in range(1, 7)]]

        second = [api.submit(command="sleep 30")["id"] for api in apis]
        assert second[0] == second[1]
        for api, job_id in zip(apis, second, strict=True):
            api.wait(job_id, {"running"})
        assert a.http.post(f"/jobs/{second[0]}/cancel").status_code == 202
        assert a.wait(second[0], timeout=10)["state"] == "cancelled"
        assert b.job(second[1])["state"] == "running"  # B's job of the same id runs on
        b.http.post(f"/jobs/{second[1]}/cancel")
        b.wait(second[1], timeout=10)

        # a third deployment told to use A's namespace refuses to start
        taken = f"jobrunner-{deployment_id(databases[0])[:16]}"
        refused = subprocess.run(
            [JOBRUNNER, "web"],
            env=dict(
                env,
                DATABASE_URL=databases[2],
                JOBRUNNER_REDIS_NAMESPACE=taken,
                JOBRUNNER_STARTUP_TIMEOUT="0",
                PORT="1",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0
        assert "belongs to another deployment" in refused.stderr
    finally:
        for api in apis:
            api.http.close()
        stop_all(started)
