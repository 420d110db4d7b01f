"""The browser tier: Playwright drives Debian's Chromium (`/usr/bin/chromium`, installed by
`.ci/run`; nothing here ever downloads a browser) against a real `jobrunner web` and
`jobrunner worker` on 127.0.0.1 (the integration fixtures of tests/conftest.py: MariaDB and
Redis; the worker is this tier's own, stopped when its tests end, so that the integration tests
after them find no worker on their queues). Screenshots go to $SCREENSHOTS_DIR (the README's
are docs/screenshots: `SCREENSHOTS_DIR=docs/screenshots scripts/test tests/browser`), else to
the run's temporary folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # never fetch a browser
os.environ.setdefault("PLAYWRIGHT_BROWSERS_PATH", "/nonexistent")  # nor look for one

from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import SHARED_QUEUES
from tests.support import TEST_TOKEN, Api, Process, start_worker

CHROMIUM = Path("/usr/bin/chromium")
#: what a page may take to show something that a real server and worker do (never a sleep)
UI_DEADLINE_MS = 20_000


@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    """One browser for the tier, stopped as the tier ends: Playwright's sync API keeps an
    event loop running in the main thread while it lives, which asyncio.run() of later tests
    would refuse."""
    if not CHROMIUM.exists():
        raise AssertionError(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


@pytest.fixture
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("SCREENSHOTS_DIR")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="package")
def browser_worker(base_env: dict[str, str], log_dir: Path) -> Iterator[Process]:
    proc = start_worker(base_env, log_dir, "browser", WORKER_QUEUES=SHARED_QUEUES)
    yield proc
    proc.stop()


@pytest.fixture
def worked(api: Api, browser_worker: Process) -> Api:
    """The API of the real stack, on an empty database, with this tier's worker running."""
    return api


@pytest.fixture
def page(chromium: Browser, worked: Api) -> Iterator[Page]:
    """A new browser (no cookies) on the web of a real stack whose worker runs the jobs."""
    context = chromium.new_context(
        base_url=worked.base_url, viewport={"width": 1280, "height": 860}
    )
    context.set_default_timeout(UI_DEADLINE_MS)
    page = context.new_page()
    yield page
    context.close()


def sign_in(page: Page, path: str = "/ui/jobs", token: str = TEST_TOKEN) -> None:
    """Open a page, get sent to the sign-in form, sign in, and land back on the page."""
    page.goto(path)
    assert "/ui/login" in page.url
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")
