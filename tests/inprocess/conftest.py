"""The in-process tier: the real code, on a temporary SQLite file and the in-process broker.

No server process: the routes run under Starlette's TestClient (`create_app`, its lifespan
included), `service.jobs` and the sweeper are called directly, and a job runs through the
worker's own loop (`actors.run_job.keep_queue`) in the test's thread. Each test gets a new
database, so nothing carries over between tests.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from actors.bootstrap import build
from actors.context import WorkerContext
from service.config import Settings
from service.db import create_engine
from service.migrate import apply_migrations
from service.web.app import create_app
from tests.conftest import SCRIPTS
from tests.support import TEST_TOKEN, Api


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    for name, text in SCRIPTS.items():
        script = home / "bin" / name
        script.write_text(text)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    apply_migrations(url)
    return Settings(
        database_url=url,
        redis_url="stub:",
        redis_namespace="inprocess",
        job_home=home,
        api_tokens=(TEST_TOKEN,),
        heartbeat_interval=0.1,
        lease_timeout=1.0,
        sweep_interval=0.1,
        kill_grace=0.5,
        retry_backoff=0.05,
        log_level="warning",
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[sa.Engine]:
    engine = create_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def worker(settings: Settings) -> Iterator[WorkerContext]:
    """A worker's context (engine, StubBroker, in-process bus) whose loops the test drives."""
    ctx = build(settings)
    yield ctx
    ctx.broker.close()
    ctx.engine.dispose()


@pytest.fixture
def app_client(settings: Settings, worker: WorkerContext) -> Iterator[TestClient]:
    """The web app, sharing the worker's dispatcher as `jobrunner dev` does (no worker thread
    runs: jobs wait until a test runs them)."""
    app = create_app(settings, dispatcher=worker.dispatcher)
    with TestClient(app, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def api(app_client: TestClient) -> Api:
    """The tests' API client on the in-process app (the same calls as against a server)."""
    client = Api("http://testserver")
    client.http.close()
    client.http = app_client
    client.http.headers["Authorization"] = f"Bearer {TEST_TOKEN}"
    return client


@pytest.fixture
def database_url(settings: Settings) -> str:
    return settings.database_url


@pytest.fixture
def clean_db() -> None:
    """Every test of this tier has a database of its own: nothing to empty."""
