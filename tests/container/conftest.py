"""Fixtures of the container tests: images built from the project's Dockerfiles, the compose stack.

Tests marked `container` build and run images with podman (a minute or two cold). They run only
when asked for, `pytest -m container` (scripts/container-test installs podman and does that);
otherwise they are skipped, and without podman they skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.container.oci import (
    BASE_IMAGE,
    HELLO_IMAGE,
    MARIADB_IMAGE,
    REDIS_IMAGE,
    ROOT,
    RUNNER_IMAGE,
    Podman,
    Stack,
    missing_tools,
    read_env_file,
    wait_until,
)
from tests.support import free_port

ENV_FILE = ROOT / "compose" / "jobrunner.env"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the container tests unless the marker expression names them (`-m container`)."""
    if "container" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="container tests run with `pytest -m container`")
    for item in items:
        if item.get_closest_marker("container"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def oci() -> Podman:
    """Podman with its state under WORK; skips where podman is not installed."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/container-test installs it)")
    if os.geteuid() != 0:
        pytest.skip("the container tests need root (rootful podman, debootstrap)")
    missing = missing_tools()
    if missing:
        pytest.fail(f"podman is installed but not {', '.join(missing)}: run scripts/container-test")
    return Podman()


@pytest.fixture(scope="session")
def images(oci: Podman) -> None:
    """The base image (if missing), then the runner and hello_world images, side by side with
    the MariaDB and Redis images and podman-compose (mostly downloads: they overlap well)."""
    started = time.monotonic()
    oci.build_base_image()

    def runner_and_hello() -> None:
        oci.build(ROOT, RUNNER_IMAGE, BASE_IMAGE)
        oci.build(ROOT / "examples" / "hello_world", HELLO_IMAGE, RUNNER_IMAGE)

    with ThreadPoolExecutor(4) as pool:
        tasks = [
            pool.submit(runner_and_hello),
            pool.submit(
                oci.build, ROOT / "compose" / "local" / "mariadb", MARIADB_IMAGE, BASE_IMAGE
            ),
            pool.submit(oci.build, ROOT / "compose" / "local" / "redis", REDIS_IMAGE, BASE_IMAGE),
            pool.submit(oci.podman_compose),
        ]
        for task in tasks:
            task.result()
    oci.timed("images", started)


@pytest.fixture(scope="session")
def api_headers() -> dict[str, str]:
    """The bearer token of compose/jobrunner.env (the web will require it)."""
    token = read_env_file(ENV_FILE)["JOBRUNNER_API_TOKENS"].split(",")[0].strip()
    return {"Authorization": f"Bearer {token}"}


def _ready(url: str, headers: dict[str, str]) -> bool:
    try:
        return httpx.get(f"{url}/readyz", headers=headers, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def stack(oci: Podman, images: None, api_headers: dict[str, str]) -> Iterator[Stack]:
    """The compose stack with the local override, up and ready; removed at the end."""
    stack = Stack(oci, oci.podman_compose(), project=f"jrtest{os.getpid()}", port=free_port())
    try:
        started = time.monotonic()
        stack.compose("up", "-d")
        wait_until(lambda: _ready(stack.url, api_headers), 180, f"{stack.url}/readyz to answer 200")
        oci.timed("stack up and ready", started)
        yield stack
    finally:
        # test_stack_stops_cleanly does this and checks it; here it is only a safety net
        if stack.leftovers():
            try:
                stack.stop_roles()
                stack.remove_scaled()
                stack.compose("down", "-v", "--remove-orphans")
            finally:
                stack.force_remove()
