"""Messages between the web and the workers.

A Dramatiq message on queue Q means "a job may be ready in queue Q": the worker thread that gets
it claims the best waiting row of Q from the database, runs it, and goes on claiming from Q
(see actors.run_job) until Q is empty or its turn is over. So priority holds across every
waiting job, a duplicate or redelivered message is harmless (its claim finds nothing, or the
next job), and a lost one is replaced by the sweeper, which wakes queues whose head job has
waited too long with no message pending.

Wake-ups are not sent per job: `wake(Q)` sends one only when none is pending for Q (a flag in
Redis, set with the message and cleared by the thread that takes it, `woken(Q)`, before its
first claim). A job committed before the flag is cleared is seen by that thread's claims; one
committed after it sends a new wake-up. A thread that claims a job on a wake-up wakes one more
(so a burst fans out to every idle thread), and threads that keep a queue need no messages:
a drain of thousands of short jobs costs a few dozen messages, not one per job.

Besides messages, notices on Redis pub/sub (or in-process, with the embedded StubBroker):
- cancel notices to workers (a fast path; workers also see cancels in their heartbeat query);
- new queue names, so that workers serving every queue start consuming them at once;
- live output: workers publish what a command prints, and the end of each attempt, on a
  channel per job; a web process following a job asks the worker that runs it for what was
  printed before it subscribed (a follow request).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import dramatiq
import redis
import structlog
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

ACTOR_NAME = "run_job"
#: a wake-up counts as pending for at most this long: if its message is lost, a job of the queue
#: committed later sends another (and the sweeper wakes queues whose head job waits too long)
WAKE_PENDING_MS = 2000
#: after a failed send, how long to skip the broker (the sweeper sends what was skipped)
BROKER_BACKOFF_S = 2.0
log = structlog.get_logger(__name__)

OutputListener = Callable[[bytes], None]


class NoticeHandler(Protocol):
    """What a worker process does with the notices it receives."""

    def on_cancel(self, job_id: int) -> None: ...
    def on_queue(self, queue: str) -> None: ...
    def on_follow(self, job_id: int, offset: int) -> None: ...


def output_chunk(offset: int, data: bytes) -> bytes:
    """A live output message: `data` starts at byte `offset` of the job's output."""
    return b"C%d " % offset + data


def attempt_end(state: str) -> bytes:
    """A live output message: an attempt ended, and the job is now `state`."""
    return b"E" + state.encode()


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
        self._local_handlers: list[NoticeHandler] = []
        self._local_output: dict[int, list[OutputListener]] = {}
        self._local_ends: dict[str, bytes] = {}
        self._local_wakes: dict[str, float] = {}
        self._lock = threading.Lock()
        self._skip_broker_until = 0.0

    def key(self, name: str) -> str:
        """A Redis key of ours: it holds two colons, which no Dramatiq queue key does."""
        return f"{self.namespace}:meta:{name}"

    # --- messages ---------------------------------------------------------------------

    def wake(self, queue: str) -> bool:
        """Make sure a worker thread will look at `queue` (after a commit that made a job of it
        ready): send a wake-up message unless one is pending already. False if the broker is
        down (the sweeper wakes the queue once it is back)."""
        return self._send(queue, 1, dedup=True)

    def woken(self, queue: str) -> None:
        """A worker thread took a wake-up of `queue` and is about to claim: jobs committed from
        now on need a wake-up of their own."""
        key = self.key(f"wake:{queue}")
        if self.redis is None:
            with self._lock:
                self._local_wakes.pop(key, None)
            return
        try:
            self.redis.delete(key)
        except redis.RedisError:
            pass  # it expires; meanwhile a job's wake-up may wait up to WAKE_PENDING_MS

    def notify(self, queue: str, count: int = 1) -> bool:
        """Send `count` wake-up messages for `queue`, pending or not (the sweeper's top-up, and
        tests that act as a broker redelivering); False if the broker is down."""
        return self._send(queue, count, dedup=False)

    def _send(self, queue: str, count: int, dedup: bool) -> bool:
        """A failure is logged and swallowed: the job is committed already, and the sweeper
        sends its message once the broker is back. After a failure, sends are skipped for a
        moment, so that requests do not each wait for a broker that is down."""
        if time.monotonic() < self._skip_broker_until:
            return False
        marked = False
        try:
            self._register(queue)
            if dedup:
                marked = self._mark_wake_pending(queue)
                if not marked:
                    return True
            if isinstance(self.broker, StubBroker):
                self.broker.declare_queue(queue)
            for _ in range(count):
                self.broker.enqueue(wake_message(queue))
        except (redis.RedisError, dramatiq.errors.BrokerError) as exc:
            if marked:
                self.woken(queue)  # no wake-up is pending after all
            self._skip_broker_until = time.monotonic() + BROKER_BACKOFF_S
            log.warning(
                "broker unavailable; the sweeper will send the message", queue=queue, error=str(exc)
            )
            return False
        return True

    def _mark_wake_pending(self, queue: str) -> bool:
        """Set the queue's wake-up flag; False if it was set (a wake-up is pending)."""
        key = self.key(f"wake:{queue}")
        if self.redis is None:
            now = time.monotonic()
            with self._lock:
                if self._local_wakes.get(key, 0.0) > now:
                    return False
                self._local_wakes[key] = now + WAKE_PENDING_MS / 1000
                return True
        return bool(self.redis.set(key, b"1", nx=True, px=WAKE_PENDING_MS))

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
        for handler in list(self._local_handlers):
            handler.on_queue(queue)

    def known_queues(self) -> set[str]:
        if self.redis is not None:
            return {name.decode() for name in self.redis.smembers(self.key("queues"))}
        return set(self._registered)

    # --- cancel notices ---------------------------------------------------------------

    def announce_cancel(self, job_id: int) -> None:
        """Ask whichever worker runs this job to stop it now (best effort)."""
        if self.redis is None:
            for handler in list(self._local_handlers):
                handler.on_cancel(job_id)
            return
        try:
            self.redis.publish(self.key("cancel"), str(job_id))
        except redis.RedisError as exc:
            log.warning(
                "cancel notice not sent; the heartbeat carries it", job_id=job_id, error=str(exc)
            )

    def listen(self, handler: NoticeHandler, stop: threading.Event) -> None:
        """Hand every notice to `handler` until `stop` is set (blocks; reconnects after a Redis
        outage)."""
        if self.redis is None:
            self._local_handlers.append(handler)
            stop.wait()
            self._local_handlers.remove(handler)
            return
        cancel, new_queue, follow = self.key("cancel"), self.key("new-queues"), self.key("follow")
        while not stop.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(cancel, new_queue, follow)
                while not stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None or message["type"] != "message":
                        continue
                    channel, data = message["channel"].decode(), message["data"].decode()
                    if channel == cancel:
                        handler.on_cancel(int(data))
                    elif channel == follow:
                        job_id, offset = data.split()
                        handler.on_follow(int(job_id), int(offset))
                    else:
                        handler.on_queue(data)
            except (redis.RedisError, ValueError) as exc:
                log.warning("notices interrupted; reconnecting", error=str(exc))
                stop.wait(1.0)
            finally:
                pubsub.close()

    # --- ends of attempts the database has not stored yet ----------------------------------

    def keep_end(self, job_id: int, lease: int, data: bytes, ttl: float) -> bool:
        """Keep how an attempt ended where the sweeper can find it (see jobs.KnownEnd);
        False if it could not be kept."""
        key = self.key(f"end:{job_id}:{lease}")
        if self.redis is None:
            with self._lock:
                self._local_ends[key] = data
            return True
        try:
            self.redis.set(key, data, ex=max(1, int(ttl)))
        except redis.RedisError as exc:
            log.warning("attempt end not kept", job_id=job_id, error=str(exc))
            return False
        return True

    def known_end(self, job_id: int, lease: int) -> bytes | None:
        key = self.key(f"end:{job_id}:{lease}")
        if self.redis is None:
            with self._lock:
                return self._local_ends.get(key)
        value = self.redis.get(key)
        return bytes(value) if value is not None else None

    def forget_end(self, job_id: int, lease: int) -> None:
        key = self.key(f"end:{job_id}:{lease}")
        if self.redis is None:
            with self._lock:
                self._local_ends.pop(key, None)
            return
        try:
            self.redis.delete(key)
        except redis.RedisError:
            pass  # it expires

    # --- live output ------------------------------------------------------------------

    def output_channel(self, job_id: int) -> str:
        return self.key(f"out:{job_id}")

    def publish_output(self, job_id: int, message: bytes) -> None:
        """Publish a live output message of a job (best effort: followers also read the
        database, and ask again when they see a gap)."""
        if self.redis is None:
            for listener in list(self._local_output.get(job_id, ())):
                listener(message)
            return
        try:
            self.redis.publish(self.output_channel(job_id), message)
        except redis.RedisError as exc:
            log.warning("live output not published", job_id=job_id, error=str(exc))

    def request_output(self, job_id: int, offset: int) -> None:
        """Ask the worker running this job to publish its output from byte `offset`."""
        if self.redis is None:
            for handler in list(self._local_handlers):
                handler.on_follow(job_id, offset)
            return
        self.redis.publish(self.key("follow"), f"{job_id} {offset}")

    def subscribe_local_output(self, job_id: int, listener: OutputListener) -> None:
        """In-process mode: call `listener` with every live output message of this job."""
        with self._lock:
            self._local_output.setdefault(job_id, []).append(listener)

    def unsubscribe_local_output(self, job_id: int, listener: OutputListener) -> None:
        with self._lock:
            listeners = self._local_output.get(job_id, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._local_output.pop(job_id, None)
