"""The one actor: a message for queue Q claims the best waiting job of Q and runs it."""

from __future__ import annotations

import dramatiq
import sqlalchemy as sa
from dramatiq import Broker

from actors import execution
from actors.context import WorkerContext
from service import jobs
from service.dispatch import ACTOR_NAME
from service.errors import DatabaseUnavailable

#: Dramatiq retries a message only for infrastructure errors, never for a job's own failure
#: (the database owns job retries); a message it gives up on is replaced by the sweeper.
INFRA_RETRIES = 20


def _retry_infrastructure_errors(retries: int, exc: BaseException) -> bool:
    transient = (DatabaseUnavailable, sa.exc.OperationalError, sa.exc.InterfaceError)
    return retries < INFRA_RETRIES and isinstance(exc, transient)


def declare(broker: Broker, ctx: WorkerContext) -> dramatiq.Actor:
    """Register the actor on `broker`, bound to this process's worker context."""

    def run_job(queue: str) -> None:
        if ctx.draining.is_set():
            ctx.dispatcher.notify(queue)  # leave the job to a worker that is not stopping
            return
        job = jobs.claim_next(ctx.engine, queue, ctx.name)
        if job is not None:
            execution.execute(ctx, job)

    backstop_ms = int((ctx.settings.max_timeout + ctx.settings.kill_grace + 600) * 1000)
    return dramatiq.Actor(
        run_job,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name="default",
        priority=0,
        options={
            "retry_when": _retry_infrastructure_errors,
            "min_backoff": 500,
            "max_backoff": 10_000,
            "time_limit": backstop_ms,
        },
    )
