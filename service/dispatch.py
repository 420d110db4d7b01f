"""Messages between the web and the workers.

A Dramatiq message on queue Q means "a job may be ready in queue Q": the worker that gets it
claims the best waiting row of Q from the database. So priority holds across every waiting
job, a duplicate or redelivered message is harmless (its claim finds nothing, or the next job),
and a lost one is replaced by the sweeper, which tops up queues that hold more ready jobs than
messages.

Besides messages: the set of known queue names (so that workers serving every queue find new
ones) and cancel notices (a fast path; workers also see cancels in their heartbeat query).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import dramatiq
import redis
import structlog
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

ACTOR_NAME = "run_job"
#: after a failed send, how long to skip the broker (the sweeper sends what was skipped)
BROKER_BACKOFF_S = 2.0
log = structlog.get_logger(__name__)

CancelListener = Callable[[int], None]
QueueListener = Callable[[str], None]


def wake_message(queue: str) -> dramatiq.Message:
    return dramatiq.Message(
        queue_name=queue, actor_name=ACTOR_NAME, args=(queue,), kwargs={}, options={}
    )


class Dispatcher:
    """Sends wake-up messages and cancel notices; knows which queues exist."""

    def __init__(self, broker: Broker, namespace: str) -> None:
        self.broker = broker
        self.namespace = namespace
        self.redis: redis.Redis | None = broker.client if isinstance(broker, RedisBroker) else None
        self._registered: set[str] = set()
        self._local_listeners: list[tuple[CancelListener, QueueListener]] = []
        self._lock = threading.Lock()
        self._skip_broker_until = 0.0

    def key(self, name: str) -> str:
        """A Redis key of ours: it holds two colons, which no Dramatiq queue key does."""
        return f"{self.namespace}:meta:{name}"

    # --- messages ---------------------------------------------------------------------

    def notify(self, queue: str, count: int = 1) -> bool:
        """Tell workers that `count` jobs may be ready in `queue`; False if the broker is down.

        A failure is logged and swallowed: the job is committed already, and the sweeper
        sends its message once the broker is back. After a failure, sends are skipped for a
        moment, so that requests do not each wait for a broker that is down.
        """
        if time.monotonic() < self._skip_broker_until:
            return False
        try:
            self._register(queue)
            if isinstance(self.broker, StubBroker):
                self.broker.declare_queue(queue)
            for _ in range(count):
                self.broker.enqueue(wake_message(queue))
        except (redis.RedisError, dramatiq.errors.BrokerError) as exc:
            self._skip_broker_until = time.monotonic() + BROKER_BACKOFF_S
            log.warning(
                "broker unavailable; the sweeper will send the message", queue=queue, error=str(exc)
            )
            return False
        return True

    def pending(self, queue: str) -> int:
        """Messages waiting in the broker for `queue` (not counting those a worker holds)."""
        if self.redis is not None:
            return int(self.redis.llen(f"{self.namespace}:{queue}"))
        if isinstance(self.broker, StubBroker) and queue in self.broker.queues:
            return self.broker.queues[queue].qsize()
        return 0

    # --- queue names ------------------------------------------------------------------

    def _register(self, queue: str) -> None:
        """Remember a queue name; announce it when it is new, so workers serve it at once."""
        if queue in self._registered:
            return
        if self.redis is not None and self.redis.sadd(self.key("queues"), queue):
            self.redis.publish(self.key("new-queues"), queue)
        with self._lock:
            self._registered.add(queue)
        for _, on_queue in list(self._local_listeners):
            on_queue(queue)

    def known_queues(self) -> set[str]:
        if self.redis is not None:
            return {name.decode() for name in self.redis.smembers(self.key("queues"))}
        return set(self._registered)

    # --- cancel notices ---------------------------------------------------------------

    def announce_cancel(self, job_id: int) -> None:
        """Ask whichever worker runs this job to stop it now (best effort)."""
        if self.redis is not None:
            try:
                self.redis.publish(self.key("cancel"), str(job_id))
            except redis.RedisError as exc:
                log.warning(
                    "cancel notice not sent; the heartbeat carries it",
                    job_id=job_id,
                    error=str(exc),
                )
            return
        for on_cancel, _ in list(self._local_listeners):
            on_cancel(job_id)

    def listen(
        self, on_cancel: CancelListener, on_queue: QueueListener, stop: threading.Event
    ) -> None:
        """Call `on_cancel` with each job id announced, `on_queue` with each new queue name,
        until `stop` is set (blocks; reconnects after a Redis outage)."""
        if self.redis is None:
            listeners = (on_cancel, on_queue)
            self._local_listeners.append(listeners)
            stop.wait()
            self._local_listeners.remove(listeners)
            return
        cancel, new_queue = self.key("cancel"), self.key("new-queues")
        while not stop.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(cancel, new_queue)
                while not stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None or message["type"] != "message":
                        continue
                    channel, data = message["channel"].decode(), message["data"].decode()
                    if channel == cancel:
                        on_cancel(int(data))
                    else:
                        on_queue(data)
            except (redis.RedisError, ValueError) as exc:
                log.warning("notices interrupted; reconnecting", error=str(exc))
                stop.wait(1.0)
            finally:
                pubsub.close()
