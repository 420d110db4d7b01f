"""Broker setup: a Dramatiq RedisBroker (or the in-process StubBroker for the embedded mode).

Used by the web (to send messages) and by workers (to consume them). Creating a broker here
has no side effects; `actors.worker` is what makes it the global broker in a worker process.
"""

from __future__ import annotations

import time

import redis
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import Middleware, Retries, TimeLimit
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from service.config import Settings

#: Dramatiq's broker heartbeat: a worker silent this long has its unacked messages re-queued.
BROKER_HEARTBEAT_TIMEOUT_MS = 30_000


#: while some of its messages are being processed, a consumer wakes at least this often to
#: hand their acks back; an idle one blocks up to the worker timeout
BUSY_WAIT_S = 0.1
FULL_WAIT_S = 0.005


class _WakingConsumer(_RedisConsumer):  # type: ignore[misc]
    """A Redis consumer that waits for a message instead of polling with backoff.

    Dramatiq's consumer sleeps between empty fetches, up to the worker timeout: an idle worker
    picks up a job 100 ms to 1 s late. This one blocks on the queue's own list with
    `BLMOVE q q LEFT RIGHT`, which returns as soon as a message id is there (and puts it back at
    the tail), then fetches as usual. Rotating the ids is harmless here: every message of a
    queue means the same thing, "a job may be ready". Delay queues keep Dramatiq's behaviour.
    The loop is Dramatiq 2.2.1's `_RedisConsumer.__next__` (pinned) with only the wait changed.
    """

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                try:
                    data = self.message_cache.pop(0)
                except IndexError:
                    if self.outstanding_message_count < self.prefetch:
                        self.message_cache = self.broker.do_fetch(
                            self.queue_name, self.prefetch - self.outstanding_message_count
                        )
                    if not self.message_cache:
                        self._wait()
                        return None
                    continue
                if data is None:
                    continue
                self.misses = 0
                message = Message.decode(data)
                self.queued_message_ids.add(message.message_id)
                return MessageProxy(message)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None

    def _wait(self) -> None:
        if self.queue_name == dq_name(self.queue_name):  # a delay queue (unused here): poll
            time.sleep(self.timeout / 1000)
            return
        if self.outstanding_message_count >= self.prefetch:
            time.sleep(FULL_WAIT_S)  # every thread busy: check the acks again shortly
            return
        block = self.timeout / 1000 if not self.outstanding_message_count else BUSY_WAIT_S
        key = f"{self.broker.namespace}:{self.queue_name}"
        self.broker.client.blmove(key, key, max(block, 0.01), "LEFT", "RIGHT")


class WakingRedisBroker(RedisBroker):
    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer


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
    return WakingRedisBroker(
        client=make_redis_client(settings.redis_url),
        namespace=settings.redis_namespace,
        middleware=middleware or [],
        heartbeat_timeout=BROKER_HEARTBEAT_TIMEOUT_MS,
    )
