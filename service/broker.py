"""The Dramatiq broker and the Redis client: a RedisBroker, or the in-process StubBroker of the
embedded mode (`jobrunner dev`).

Used by the web (to send wake-ups) and by workers (actors.consumer adds what consuming needs).
Creating a broker here has no side effects; `actors.worker` is what makes one the global
broker of a worker process.
"""

from __future__ import annotations

import os

import redis
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from service.config import Settings

#: Dramatiq's broker heartbeat: a worker silent this long has its unacked messages re-queued.
BROKER_HEARTBEAT_TIMEOUT_MS = 30_000


def make_redis_client(url: str, *, socket_timeout: float | None = 5.0) -> redis.Redis:
    """A client that fails fast: a request must not hang for long on a Redis outage. Its
    connections are named `jobrunner:<pid>` (CLIENT LIST tells whose they are)."""
    return redis.Redis.from_url(
        url,
        client_name=f"jobrunner:{os.getpid()}",
        socket_timeout=socket_timeout,
        socket_connect_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        health_check_interval=30,
    )


def make_broker(
    settings: Settings,
    *,
    middleware: list[Middleware] | None = None,
    redis_class: type[RedisBroker] = RedisBroker,
    **options: object,
) -> Broker:
    """The broker of these settings; a worker passes its own RedisBroker class and options."""
    if settings.uses_stub_broker:
        return StubBroker(middleware=middleware or [])
    return redis_class(
        client=make_redis_client(settings.redis_url),
        namespace=settings.redis_namespace,
        middleware=middleware or [],
        heartbeat_timeout=BROKER_HEARTBEAT_TIMEOUT_MS,
        **options,
    )
