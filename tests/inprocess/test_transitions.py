"""The transitions of service.jobs and the sweeper's, straight on SQLite: the tests of
tests/integration/test_claims.py and test_sweeper.py, which the integration tier runs on
MariaDB (where the races between workers' transactions are real)."""

from __future__ import annotations

from tests.integration import test_claims, test_sweeper

globals().update(
    {
        f"{module.__name__.rsplit('.', 1)[1]}__{name}": getattr(module, name)
        for module in (test_claims, test_sweeper)
        for name in dir(module)
        if name.startswith("test_")
    }
)
