"""The API tests of tests/integration/test_api.py, on the in-process app: every route, its
validation and its answers, in a second or two (the integration tier runs them against
`jobrunner web` on MariaDB and Redis, and against `jobrunner dev`)."""

from __future__ import annotations

from tests.integration import test_api as on_servers

#: the one that needs a real server: concurrent requests over sockets
NEEDS_A_SERVER = {"test_idempotency_key_under_concurrent_requests"}

globals().update(
    {
        name: getattr(on_servers, name)
        for name in dir(on_servers)
        if name.startswith("test_") and name not in NEEDS_A_SERVER
    }
)
