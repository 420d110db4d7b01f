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

Besides messages, notices on the bus (service.bus: Redis pub/sub, or in-process):
- cancel notices to workers (a fast path; workers also see cancels in their heartbeat query);
- live output: workers publish what a command prints, and the end of each attempt, on a
  channel per job; a web process following a job asks the worker that runs it for what was
  printed before it subscribed (a follow request).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import dramatiq
import redis
import structlog
from dramatiq import Broker
from dramatiq.brokers.stub import StubBroker

from service.bus import Bus, BusUnavailable, Keys, make_bus
from service.config import Settings

ACTOR_NAME = "run_job"
#: the one Dramatiq queue of the workers that serve every queue: its messages name the job
#: queue to look at. (Not a valid job queue name: it holds a dot.) A worker that serves named
#: queues (WORKER_QUEUES) consumes a Dramatiq queue of each name instead: the threads and
#: connections of a worker depend on its configuration, never on how many job queues exist.
ANY_QUEUE = "jobrunner.any"
#: the state an end message gives for a job a client deleted (it has no state any more)
JOB_DELETED = "deleted"
#: a wake-up counts as pending for at most this long: if its message is lost, a job of the queue
#: committed later sends another (and the sweeper wakes queues whose head job waits too long)
WAKE_PENDING_MS = 2000
#: after a failed send, how long to skip the broker (the sweeper sends what was skipped)
BROKER_BACKOFF_S = 2.0
log = structlog.get_logger(__name__)


class NoticeHandler(Protocol):
    """What a worker process does with the notices it receives."""

    def on_cancel(self, job_id: int) -> None: ...
    def on_follow(self, job_id: int, offset: int) -> None: ...


def output_chunk(offset: int, data: bytes) -> bytes:
    """A live output message: `data` starts at byte `offset` of the job's output."""
    return b"C%d " % offset + data


def attempt_end(state: str, exit_code: int | None = None, last_error: str | None = None) -> bytes:
    """A live output message: an attempt ended, and the job is now `state` (or JOB_DELETED),
    with this exit code and last error: what a follower reports if the job is gone by the
    time it reads it (deleted on success when JOBRUNNER_RETENTION_SUCCEEDED is 0)."""
    return b"E" + json.dumps([state, exit_code, last_error]).encode()


def wake_message(queue: str, dramatiq_queue: str = ANY_QUEUE) -> dramatiq.Message[Any]:
    """A wake-up for job queue `queue`, sent on Dramatiq queue `dramatiq_queue`."""
    return dramatiq.Message(
        queue_name=dramatiq_queue, actor_name=ACTOR_NAME, args=(queue,), kwargs={}, options={}
    )


#: the job queues that some live worker serves by name (WORKER_QUEUES): their wake-ups also go
#: to a Dramatiq queue of that name
NamedQueues = Callable[[], set[str]]


class Dispatcher:
    """Sends wake-up messages and notices; knows which queues exist; keeps attempt ends."""

    def __init__(self, broker: Broker, bus: Bus, named: NamedQueues) -> None:
        self.broker = broker
        self.bus = bus
        self.keys: Keys = bus.keys
        self.named = named
        self._skip_broker_until = 0.0

    # --- messages ---------------------------------------------------------------------

    def wake(self, queue: str) -> bool:
        """Make sure a worker thread will look at `queue` (after a commit that made a job of it
        ready): send a wake-up message unless one is pending already. False if the broker is
        down (the sweeper wakes the queue once it is back)."""
        return self._send(queue, 1, dedup=True)

    def woken(self, queue: str) -> None:
        """A worker thread took a wake-up of `queue` and is about to claim: jobs committed from
        now on need a wake-up of their own."""
        try:
            self.bus.delete(self.keys.wake(queue))
        except BusUnavailable:
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
            if dedup:
                marked = self.bus.set_flag(self.keys.wake(queue), WAKE_PENDING_MS)
                if not marked:
                    return True
            targets = [ANY_QUEUE, *([queue] if queue in self.named() else [])]
            for target in targets:
                if isinstance(self.broker, StubBroker):
                    self.broker.declare_queue(target)
                for _ in range(count):
                    self.broker.enqueue(wake_message(queue, target))
        except (BusUnavailable, redis.RedisError, dramatiq.errors.BrokerError) as exc:
            if marked:
                self.woken(queue)  # no wake-up is pending after all
            self._skip_broker_until = time.monotonic() + BROKER_BACKOFF_S
            log.warning(
                "broker unavailable; the sweeper will send the message", queue=queue, error=str(exc)
            )
            return False
        return True

    def wake_pending(self, queue: str) -> bool:
        """Whether a wake-up of `queue` was sent and no worker thread has taken it yet."""
        return self.bus.get(self.keys.wake(queue)) is not None

    # --- notices to workers -----------------------------------------------------------

    def announce_cancel(self, job_id: int) -> None:
        """Ask whichever worker runs this job to stop it now (best effort)."""
        try:
            self.bus.publish(self.keys.cancel_channel, str(job_id).encode())
        except BusUnavailable as exc:
            log.warning(
                "cancel notice not sent; the heartbeat carries it", job_id=job_id, error=str(exc)
            )

    def request_output(self, job_id: int, offset: int) -> None:
        """Ask the worker running this job to publish its output from byte `offset`."""
        self.bus.publish(self.keys.follow_channel, f"{job_id} {offset}".encode())

    def listen(self, handler: NoticeHandler, stop: threading.Event) -> None:
        """Hand every notice to `handler` until `stop` is set (blocks; rides out outages)."""
        keys = self.keys

        def dispatch(channel: str, data: bytes) -> None:
            try:
                if channel == keys.cancel_channel:
                    handler.on_cancel(int(data))
                elif channel == keys.follow_channel:
                    job_id, offset = data.split()
                    handler.on_follow(int(job_id), int(offset))
            except ValueError as exc:
                log.warning("unreadable notice ignored", channel=channel, error=str(exc))

        channels = (keys.cancel_channel, keys.follow_channel)
        self.bus.listen(channels, dispatch, stop)

    # --- ends of attempts the database has not stored yet ----------------------------------

    def keep_end(self, job_id: int, lease: int, data: bytes, ttl: float) -> bool:
        """Keep how an attempt ended where the sweeper can find it (see jobs.KnownEnd);
        False if it could not be kept."""
        try:
            self.bus.put(self.keys.attempt_end(job_id, lease), data, ttl)
        except BusUnavailable as exc:
            log.warning("attempt end not kept", job_id=job_id, error=str(exc))
            return False
        return True

    def known_end(self, job_id: int, lease: int) -> bytes | None:
        return self.bus.get(self.keys.attempt_end(job_id, lease))

    def forget_end(self, job_id: int, lease: int) -> None:
        try:
            self.bus.delete(self.keys.attempt_end(job_id, lease))
        except BusUnavailable:
            pass  # it expires

    # --- live output ------------------------------------------------------------------

    def publish_output(self, job_id: int, message: bytes) -> None:
        """Publish a live output message of a job (best effort: followers also read the
        database, and ask again when they see a gap)."""
        try:
            self.bus.publish(self.keys.output_channel(job_id), message)
        except BusUnavailable as exc:
            log.warning("live output not published", job_id=job_id, error=str(exc))


def dispatcher_for(broker: Broker, settings: Settings, named: NamedQueues) -> Dispatcher:
    """The dispatcher of a process: this broker, and the bus that goes with it (service.bus).
    `named` must say which queues workers serve by name (service.workers.NamedQueues): their
    wake-ups go to those workers too, not only to the workers that serve every queue."""
    redis_url = None if settings.uses_stub_broker else settings.redis_url
    return Dispatcher(broker, make_bus(broker, settings.redis_namespace, redis_url), named)
