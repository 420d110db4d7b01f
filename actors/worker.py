"""The module the `dramatiq` command loads in each worker process (`dramatiq actors.worker`).

It reads the settings, builds this process's engine and broker, makes that broker Dramatiq's
global one and declares the actor on it. Dramatiq imports it after forking, so nothing here is
shared between processes.
"""

from __future__ import annotations

import dramatiq

from actors import run_job
from actors.broker import make_broker, worker_middleware
from actors.context import WorkerContext
from actors.lifecycle import WorkerLifecycle
from service import logs
from service.config import Settings
from service.db import create_engine
from service.dispatch import Dispatcher


def build(settings: Settings) -> WorkerContext:
    """A worker context with its broker set up: the actor declared, the lifecycle hooked in."""
    broker = make_broker(settings, middleware=worker_middleware())
    engine = create_engine(
        settings.database_url, pool_size=settings.worker_threads + 3, max_overflow=5
    )
    ctx = WorkerContext(
        settings=settings,
        engine=engine,
        broker=broker,
        dispatcher=Dispatcher(broker, settings.redis_namespace),
    )
    broker.add_middleware(WorkerLifecycle(ctx))
    run_job.declare(broker, ctx)
    return ctx


settings = Settings.from_environ()
logs.configure(settings, process="worker")
context = build(settings)
broker = context.broker
dramatiq.set_broker(broker)
