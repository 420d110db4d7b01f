"""What a worker process needs to consume wake-ups: a Redis consumer that blocks instead of
polling, one slot per worker thread, and the middleware of the actor.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import Middleware, Retries, TimeLimit

from service.broker import make_broker
from service.config import Settings

#: while some of its messages are being processed, a consumer wakes at least this often to
#: hand their acks back; an idle one blocks up to the worker timeout
BUSY_WAIT_S = 0.1
FULL_WAIT_S = 0.005


class Slots:
    """How many more wake-up messages this worker process may take from Redis: one per idle
    worker thread, across all the queues it serves.

    Dramatiq lets each queue's consumer prefetch on its own, so a process whose threads are
    all busy (keeping one queue, or stopping) would still take another queue's wake-up and sit
    on it while other processes idle; with one wake-up per burst (service.dispatch) that
    would stall the burst. A slot is taken when a message is fetched and given back when a
    worker thread is done with it (WorkerLifecycle.after_process_message); `close` (on
    shutdown) takes no more.
    """

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._closed = False
        self._changed = threading.Condition()

    def take(self, wanted: int) -> int:
        with self._changed:
            granted = 0 if self._closed else max(0, min(wanted, self._free))
            self._free -= granted
            return granted

    def give(self, count: int = 1) -> None:
        with self._changed:
            self._free += count
            self._changed.notify_all()

    def wait_free(self, timeout: float) -> None:
        """Wait until a slot is free (or `timeout` seconds)."""
        with self._changed:
            if self._free <= 0 or self._closed:
                self._changed.wait(timeout)

    def close(self) -> None:
        with self._changed:
            self._closed = True

    @property
    def free(self) -> int:
        return 0 if self._closed else self._free


class _WakingConsumer(_RedisConsumer):
    """A Redis consumer that waits for a message instead of polling with backoff, and takes
    no more messages than its process has idle worker threads (Slots).

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
                        self.message_cache = self._fetch(
                            self.prefetch - self.outstanding_message_count
                        )
                    if not self.message_cache:
                        self._wait()
                        return None
                    continue
                if data is None:  # an id whose message is gone: its slot is free again
                    self._give_back(1)
                    continue
                self.misses = 0
                message = Message.decode(data)
                self.queued_message_ids.add(message.message_id)
                if not self._reaches_a_thread(message):
                    self._give_back(1)
                return MessageProxy(message)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    @property
    def _is_delay_queue(self) -> bool:
        return bool(self.queue_name == dq_name(self.queue_name))

    def _fetch(self, wanted: int) -> list[bytes]:
        if self._is_delay_queue:  # its messages go back to their queue, not to a thread
            return list(self.broker.do_fetch(self.queue_name, wanted))
        slots: Slots = self.broker.slots
        granted = slots.take(wanted)
        if not granted:
            return []
        fetched: list[bytes] = []
        try:
            fetched = list(self.broker.do_fetch(self.queue_name, granted))
        finally:  # a fetch cut off by a lost connection holds no slot
            slots.give(granted - len(fetched))
        return fetched

    def _reaches_a_thread(self, message: Message[Any]) -> bool:
        """False for a message that Dramatiq's consumer thread handles itself, so that its
        slot would never come back: one for an actor this process does not have (nacked to
        the dead-letter queue), or one with an eta (held in the thread's delay queue)."""
        return message.actor_name in self.broker.actors and message.options.get("eta") is None

    def _give_back(self, count: int) -> None:
        if count and not self._is_delay_queue:
            self.broker.slots.give(count)

    def close(self) -> None:
        """Dramatiq closes a consumer on a connection error and makes a new one: the messages
        fetched but not handed to a thread will never reach one, so their slots are free
        again. (Their ids wait in this worker's ack set, which Redis hands back when the
        worker is gone; they are only wake-ups, and the sweeper wakes queues whose jobs wait.)
        Without this, an outage that cut a fetch short left the process with fewer slots, down
        to none: it took no more wake-ups for as long as it lived."""
        cached, self.message_cache = self.message_cache, []
        self._give_back(len(cached))
        super().close()

    def _wait(self) -> None:
        if self._is_delay_queue:  # a delay queue (Dramatiq's retries of a message): poll
            time.sleep(self.timeout / 1000)
            return
        slots: Slots = self.broker.slots
        if not slots.free:
            slots.wait_free(BUSY_WAIT_S)  # every thread busy: wait for one to be done
            return
        if self.outstanding_message_count >= self.prefetch:
            time.sleep(FULL_WAIT_S)  # done, but not acked yet: the acks come next
            return
        block = self.timeout / 1000 if not self.outstanding_message_count else BUSY_WAIT_S
        key = f"{self.broker.namespace}:{self.queue_name}"
        self.broker.client.blmove(key, key, max(block, 0.01), "LEFT", "RIGHT")


class WakingRedisBroker(RedisBroker):
    def __init__(self, *, slots: int, **options: object) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self.slots = Slots(slots)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer


def worker_middleware() -> list[Middleware]:
    """Retries for infrastructure errors (the database owns job retries) and a time limit
    as a backstop (the runner enforces each job's own timeout)."""
    return [TimeLimit(), Retries(max_retries=0)]


def make_worker_broker(settings: Settings, middleware: list[Middleware]) -> Broker:
    """A worker's broker: the waking consumer and one slot per thread (the StubBroker of the
    embedded mode as it is)."""
    if settings.uses_stub_broker:
        return make_broker(settings, middleware=middleware)
    return make_broker(
        settings,
        middleware=middleware,
        redis_class=WakingRedisBroker,
        slots=settings.worker_threads,
    )
