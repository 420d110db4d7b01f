"""Assembling a worker: its engine, broker and dispatcher, the actor, the lifecycle middleware.

Free of side effects on import, unlike `actors.worker` (the module the `dramatiq` command loads),
so that `jobrunner dev` can build a worker inside the web's process.
"""

from __future__ import annotations

import atexit

from actors import reaper, run_job
from actors.consumer import make_worker_broker, worker_middleware
from actors.containment import contain
from actors.context import WorkerContext, worker_name
from actors.lifecycle import WorkerLifecycle
from service import job_user
from service.config import Settings
from service.db import create_engine
from service.dispatch import dispatcher_for
from service.workers import NamedQueues


def build(settings: Settings, *, name: str | None = None) -> WorkerContext:
    """A worker context with its broker set up: the actor declared, the lifecycle hooked in.

    `name`: the worker's name (`locked_by`) if not `host:pid`."""
    reaper.announce_alive()  # other workers' reapers leave this process's commands alone
    broker = make_worker_broker(settings, worker_middleware())
    # no pre-ping: every write of the worker is retried on DatabaseUnavailable (the claim by
    # Dramatiq, the others in place), so a dead connection costs one retry, not a ping each time
    engine = create_engine(
        settings.database_url,
        pool_size=settings.worker_threads + 3,
        max_overflow=5,
        pre_ping=False,
    )
    ctx = WorkerContext(
        settings=settings,
        engine=engine,
        broker=broker,
        dispatcher=dispatcher_for(
            broker,
            settings,
            NamedQueues(engine, settings.lease_timeout, own=settings.worker_queues),
        ),
        name=name or worker_name(),
        containment=contain(settings.containment),
        job_user=job_user.resolve(settings.job_user) if settings.job_user else None,
    )
    atexit.register(ctx.containment.close)  # nothing of this process's jobs outlives it
    broker.add_middleware(WorkerLifecycle(ctx))
    run_job.declare(broker, ctx)
    return ctx
