"""The one actor: a wake-up for queue Q makes a worker thread keep Q for a while.

The thread claims the best waiting job of Q, runs it, and claims again, until Q has nothing
ready or its turn (KEEP_QUEUE_S) is over; then it gives the thread back to Dramatiq, waking Q
again if it may hold more. Messages are wake-ups, not jobs (service.dispatch): a burst of jobs
costs a few messages, and a thread that keeps its queue pays no fetch and no ack per job.
"""

from __future__ import annotations

import time

import dramatiq
import sqlalchemy as sa
from dramatiq import Broker

from actors import execution
from actors.context import WorkerContext
from service import jobs
from service.dispatch import ACTOR_NAME, ANY_QUEUE
from service.errors import DatabaseUnavailable

#: Dramatiq retries a message only for infrastructure errors, never for a job's own failure
#: (the database owns job retries); a message it gives up on is replaced by the sweeper.
INFRA_RETRIES = 20
#: how long a thread keeps one queue before it lets others have a turn (it checks between
#: jobs, so a turn lasts at most this plus one job)
KEEP_QUEUE_S = 1.0


def _retry_infrastructure_errors(retries: int, exc: BaseException) -> bool:
    transient = (DatabaseUnavailable, sa.exc.OperationalError, sa.exc.InterfaceError)
    return retries < INFRA_RETRIES and isinstance(exc, transient)


def keep_queue(ctx: WorkerContext, queue: str) -> int:
    """Work `queue` for one turn (see the module docstring); returns how many jobs ran."""
    ctx.dispatcher.woken(queue)  # jobs committed from now on send a wake-up of their own
    if ctx.draining.is_set():
        ctx.dispatcher.wake(queue)  # leave the job to a worker that is not stopping
        return 0
    turn_ends = time.monotonic() + KEEP_QUEUE_S
    claim = jobs.NextClaim(queue, ctx.name, ctx.settings.queue_cap(queue))

    def keep_going() -> jobs.NextClaim | None:
        """Asked as each job's end is recorded: claim the next in the same transaction?"""
        if ctx.draining.is_set() or time.monotonic() >= turn_ends:
            return None
        return claim

    job = jobs.claim_next(ctx.engine, queue, ctx.name, claim.cap)
    if job is not None:
        ctx.dispatcher.wake(queue)  # more may wait: another idle thread takes the next one
    ran = 0
    while job is not None:
        after = execution.execute(ctx, job, keep_going)
        ran += 1
        if after.tried:
            job = after.job  # None: the queue had nothing ready
        elif keep_going() is not None:  # the end was not recorded by us: claim on its own
            job = jobs.claim_next(ctx.engine, queue, ctx.name, claim.cap)
        else:
            ctx.dispatcher.wake(queue)  # the turn is over; the queue may hold more
            break
    return ran


def declare(broker: Broker, ctx: WorkerContext) -> dramatiq.Actor[[str], None]:
    """Register the actor on `broker`, bound to this process's worker context."""

    def run_job(queue: str) -> None:
        keep_queue(ctx, queue)

    backstop_ms = int((ctx.settings.max_timeout + ctx.settings.kill_grace + 600) * 1000)
    return dramatiq.Actor(
        run_job,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=ANY_QUEUE,
        priority=0,
        options={
            "retry_when": _retry_infrastructure_errors,
            "min_backoff": 500,
            "max_backoff": 10_000,
            "time_limit": backstop_ms,
        },
    )
