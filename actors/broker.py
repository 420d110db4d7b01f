"""Broker setup: a Dramatiq RedisBroker (or the in-process StubBroker for the embedded mode).

Used by the web (to send messages) and by workers (to consume them). Creating a broker here
has no side effects; `actors.worker` is what makes it the global broker in a worker process.
"""

from __future__ import annotations

import redis
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, Retries, TimeLimit
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from service.config import Settings

#: Dramatiq's broker heartbeat: a worker silent this long has its unacked messages re-queued.
BROKER_HEARTBEAT_TIMEOUT_MS = 30_000


def make_redis_client(url: str, *, socket_timeout: float | None = 5.0) -> redis.Redis:
    """A client that fails fast: a request must not hang for long on a Redis outage."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        health_check_interval=30,
    )


def worker_middleware() -> list[Middleware]:
    """Retries for infrastructure errors (the database owns job retries) and a time limit
    as a backstop (the runner enforces each job's own timeout)."""
    return [TimeLimit(), Retries(max_retries=0)]


def make_broker(settings: Settings, *, middleware: list[Middleware] | None = None) -> Broker:
    if settings.uses_stub_broker:
        return StubBroker(middleware=middleware or [])
    return RedisBroker(
        client=make_redis_client(settings.redis_url),
        namespace=settings.redis_namespace,
        middleware=middleware or [],
        heartbeat_timeout=BROKER_HEARTBEAT_TIMEOUT_MS,
    )
