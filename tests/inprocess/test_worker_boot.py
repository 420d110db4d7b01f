"""A worker process whose background work cannot start exits instead of running jobs
without it (actors.lifecycle)."""

from __future__ import annotations

import dramatiq
import pytest
import sqlalchemy as sa

from actors.context import WorkerContext
from actors.lifecycle import BOOT_FAILED


def test_a_boot_that_fails_ends_the_process(worker: WorkerContext, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE workers")  # its presence cannot be registered
    threads = dramatiq.Worker(worker.broker, worker_threads=1)
    try:
        with pytest.raises(SystemExit) as exited:
            threads.start()  # Dramatiq would log an Exception of the hook and go on
        assert exited.value.code == BOOT_FAILED
    finally:
        threads.stop(timeout=5000)
