"""The one seam between processes besides the database: Redis, or in-process for `jobrunner dev`.

Web and worker processes share a few small things outside the database: notices on channels
(cancel, follow requests, live output), flags and values with a time to live
(wake-ups pending, the end of an attempt kept for the sweeper), counters (metrics) and one
lock (the sweeper's). `Bus` is that interface, with two implementations:

- `RedisBus`: a Redis server shared by every process and machine of a deployment;
- `LocalBus`: the same in memory, for one process that runs the web and a worker together
  (`jobrunner dev`, on Dramatiq's StubBroker).

Which one is chosen once (`make_bus`); nothing else in the code base asks whether Redis is
there. Every Redis key and channel name of the service is built here (`Keys`), under the
deployment's namespace; Dramatiq's own keys for its queues are `{namespace}:{queue}`.
Failures of the Redis server surface as `BusUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Protocol

import redis
import redis.asyncio as aioredis
import structlog
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from redis.exceptions import LockError

log = structlog.get_logger(__name__)

#: a notice: (channel, data)
Handler = Callable[[str, bytes], None]


class BusUnavailable(ConnectionError):
    """The shared bus (the Redis server) cannot be reached now."""


class Keys:
    """Every Redis key and channel name of one deployment (its namespace)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def _meta(self, name: str) -> str:
        # two colons: no Dramatiq queue key has them
        return f"{self.namespace}:meta:{name}"

    def dramatiq_queue(self, queue: str) -> str:
        """Dramatiq's list of message ids of a queue (RedisBroker names it so)."""
        return f"{self.namespace}:{queue}"

    @property
    def cancel_channel(self) -> str:
        return self._meta("cancel")

    @property
    def follow_channel(self) -> str:
        return self._meta("follow")

    @property
    def hub_channel(self) -> str:
        """A channel every web process subscribes to (its subscription stays open)."""
        return self._meta("hub")

    def output_channel(self, job_id: int) -> str:
        return self._meta(f"out:{job_id}")

    def output_job(self, channel: str) -> int | None:
        """The job id of an output channel, None for any other channel."""
        prefix = self._meta("out:")
        return int(channel[len(prefix) :]) if channel.startswith(prefix) else None

    def wake(self, queue: str) -> str:
        return self._meta(f"wake:{queue}")

    def attempt_end(self, job_id: int, lease: int) -> str:
        return self._meta(f"end:{job_id}:{lease}")

    @property
    def metrics(self) -> str:
        return self._meta("metrics")

    @property
    def owner(self) -> str:
        """The id of the deployment whose namespace this is (service.deployment)."""
        return self._meta("deployment")

    @property
    def sweeper_lock(self) -> str:
        return self._meta("sweeper")


class LeaderLock(Protocol):
    def hold(self) -> bool:
        """Take the lock or renew it; False if another process holds it."""

    def release(self) -> None: ...


class Subscriber(Protocol):
    """An async subscription of a web process (live output)."""

    async def subscribe(self, *channels: str) -> None: ...
    async def unsubscribe(self, *channels: str) -> None: ...
    async def get_message(self, timeout: float) -> tuple[str, bytes] | None:
        """The next message of a subscribed channel, None after `timeout` seconds."""

    async def publish(self, channel: str, data: bytes) -> None: ...
    async def aclose(self) -> None: ...


class Bus(Protocol):
    keys: Keys

    def publish(self, channel: str, data: bytes) -> None: ...

    def listen(self, channels: Iterable[str], handler: Handler, stop: threading.Event) -> None:
        """Hand every message of these channels to `handler` until `stop` is set (blocks, and
        rides out an outage of the bus)."""

    def subscriber(self) -> Subscriber: ...

    def set_flag(self, key: str, ttl_ms: int) -> bool:
        """Set `key` unless it is set; True if this call set it. It expires after `ttl_ms`."""

    def put(self, key: str, value: bytes, ttl_s: float) -> None: ...
    def get(self, key: str) -> bytes | None: ...
    def claim(self, key: str, value: bytes) -> bytes:
        """Set `key` to `value` for good unless it is set; return what it holds now."""

    def delete(self, key: str) -> None: ...
    def add_counts(self, key: str, amounts: dict[str, float]) -> None: ...
    def counts(self, key: str) -> dict[str, float]: ...
    def leader_lock(self, key: str, ttl: float) -> LeaderLock: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...


def make_bus(broker: Broker, namespace: str, redis_url: str | None) -> Bus:
    """The bus that goes with this broker: Redis beside a RedisBroker, else in-process."""
    keys = Keys(namespace)
    if isinstance(broker, RedisBroker):
        assert redis_url is not None
        return RedisBus(broker.client, redis_url, keys)
    if isinstance(broker, StubBroker):
        return LocalBus(broker, keys)
    raise TypeError(f"no bus for a {type(broker).__name__}")


# --- Redis ----------------------------------------------------------------------------------

#: how long a listener blocks on its socket between two looks at its stop event: a stopping
#: worker waits this long for its notice thread (no Redis command: a wake-up costs a syscall)
LISTEN_WAKE_S = 0.2


def _bytes(value: object) -> bytes:
    """A reply of a client without decode_responses: bytes (typed bytes | str by redis-py)."""
    assert isinstance(value, bytes), value
    return value


class _RedisLock:
    """A Redis lock with a time to live, renewed by each `hold`."""

    def __init__(self, client: redis.Redis, key: str, ttl: float) -> None:
        self.ttl = ttl
        self._lock = client.lock(key, timeout=ttl)
        self._held = False

    def hold(self) -> bool:
        try:
            if self._held:
                self._lock.extend(self.ttl, replace_ttl=True)
            else:
                self._held = bool(self._lock.acquire(blocking=False))
        except (LockError, redis.RedisError):
            self._held = False
        return self._held

    def release(self) -> None:
        if self._held:
            with contextlib.suppress(LockError, redis.RedisError):
                self._lock.release()
        self._held = False


class _RedisSubscriber:
    def __init__(self, url: str) -> None:
        self._client = aioredis.Redis.from_url(url, socket_timeout=None)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)

    async def subscribe(self, *channels: str) -> None:
        try:
            await self._pubsub.subscribe(*channels)
        except (redis.RedisError, OSError) as exc:
            raise BusUnavailable(str(exc)) from exc

    async def unsubscribe(self, *channels: str) -> None:
        try:
            await self._pubsub.unsubscribe(*channels)
        except (redis.RedisError, OSError) as exc:
            raise BusUnavailable(str(exc)) from exc

    async def get_message(self, timeout: float) -> tuple[str, bytes] | None:
        try:
            message = await self._pubsub.get_message(timeout=timeout)
        except (redis.RedisError, OSError) as exc:
            raise BusUnavailable(str(exc)) from exc
        if message is None or message["type"] != "message":
            return None
        return message["channel"].decode(), bytes(message["data"])

    async def publish(self, channel: str, data: bytes) -> None:
        try:
            await self._client.publish(channel, data)
        except (redis.RedisError, OSError) as exc:
            raise BusUnavailable(str(exc)) from exc

    async def aclose(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._client.aclose()


class RedisBus:
    """The bus on a Redis server (the broker's own client: one connection pool)."""

    def __init__(self, client: redis.Redis, url: str, keys: Keys) -> None:
        self.client = client
        self.url = url
        self.keys = keys

    def publish(self, channel: str, data: bytes) -> None:
        try:
            self.client.publish(channel, data)
        except redis.RedisError as exc:
            raise BusUnavailable(str(exc)) from exc

    def listen(self, channels: Iterable[str], handler: Handler, stop: threading.Event) -> None:
        names = list(channels)
        while not stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(*names)
                while not stop.is_set():
                    message = pubsub.get_message(timeout=LISTEN_WAKE_S)
                    if message is not None and message["type"] == "message":
                        handler(message["channel"].decode(), bytes(message["data"]))
            except (redis.RedisError, ValueError) as exc:
                log.warning("notices interrupted; reconnecting", error=str(exc))
                stop.wait(1.0)
            finally:
                pubsub.close()

    def subscriber(self) -> Subscriber:
        return _RedisSubscriber(self.url)

    def set_flag(self, key: str, ttl_ms: int) -> bool:
        try:
            return bool(self.client.set(key, b"1", nx=True, px=ttl_ms))
        except redis.RedisError as exc:
            raise BusUnavailable(str(exc)) from exc

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        try:
            self.client.set(key, value, ex=max(1, int(ttl_s)))
        except redis.RedisError as exc:
            raise BusUnavailable(str(exc)) from exc

    def get(self, key: str) -> bytes | None:
        try:
            value = self.client.get(key)
        except redis.RedisError as exc:
            raise BusUnavailable(str(exc)) from exc
        return _bytes(value) if value is not None else None

    def claim(self, key: str, value: bytes) -> bytes:
        try:
            self.client.set(key, value, nx=True)
            held = self.client.get(key)
        except redis.RedisError as exc:
            raise BusUnavailable(str(exc)) from exc
        return _bytes(held) if held is not None else value

    def delete(self, key: str) -> None:
        try:
            self.client.delete(key)
        except redis.RedisError as exc:
            raise BusUnavailable(str(exc)) from exc

    def add_counts(self, key: str, amounts: dict[str, float]) -> None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for field, amount in amounts.items():
                    pipe.hincrbyfloat(key, field, amount)
                pipe.execute()
        except redis.RedisError as exc:
            raise BusUnavailable(str(exc)) from exc

    def counts(self, key: str) -> dict[str, float]:
        try:
            raw = self.client.hgetall(key)
        except redis.RedisError as exc:
            raise BusUnavailable(str(exc)) from exc
        return {_bytes(field).decode(): float(value) for field, value in raw.items()}

    def leader_lock(self, key: str, ttl: float) -> LeaderLock:
        return _RedisLock(self.client, key, ttl)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self.client.close()


# --- in-process -----------------------------------------------------------------------------


class _LocalLock:
    """One process: the lock is always its own."""

    def hold(self) -> bool:
        return True

    def release(self) -> None:
        pass


class _LocalSubscriber:
    """An asyncio queue fed by publishers of any thread of this process."""

    def __init__(self, bus: LocalBus) -> None:
        self._bus = bus
        self._loop = asyncio.get_running_loop()
        self._messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._channels: set[str] = set()

    def deliver(self, channel: str, data: bytes) -> None:  # any thread
        self._loop.call_soon_threadsafe(self._messages.put_nowait, (channel, data))

    async def subscribe(self, *channels: str) -> None:
        for channel in channels:
            self._channels.add(channel)
            self._bus._subscribe(channel, self.deliver)

    async def unsubscribe(self, *channels: str) -> None:
        for channel in channels:
            self._channels.discard(channel)
            self._bus._unsubscribe(channel, self.deliver)

    async def get_message(self, timeout: float) -> tuple[str, bytes] | None:
        try:
            return await asyncio.wait_for(self._messages.get(), timeout)
        except TimeoutError:
            return None

    async def publish(self, channel: str, data: bytes) -> None:
        await asyncio.to_thread(self._bus.publish, channel, data)

    async def aclose(self) -> None:
        await self.unsubscribe(*list(self._channels))


class LocalBus:
    """The bus of one process that runs the web and a worker (`jobrunner dev`)."""

    def __init__(self, broker: StubBroker, keys: Keys) -> None:
        self.broker = broker
        self.keys = keys
        self._lock = threading.Lock()
        self._listeners: defaultdict[str, list[Handler]] = defaultdict(list)
        self._values: dict[str, tuple[bytes, float]] = {}
        self._counts: defaultdict[str, defaultdict[str, float]] = defaultdict(
            lambda: defaultdict(float)
        )

    def _subscribe(self, channel: str, handler: Handler) -> None:
        with self._lock:
            self._listeners[channel].append(handler)

    def _unsubscribe(self, channel: str, handler: Handler) -> None:
        with self._lock:
            handlers = self._listeners.get(channel, [])
            if handler in handlers:
                handlers.remove(handler)
            if not handlers:
                self._listeners.pop(channel, None)

    def publish(self, channel: str, data: bytes) -> None:
        with self._lock:
            handlers = list(self._listeners.get(channel, ()))
        for handler in handlers:
            handler(channel, data)

    def listen(self, channels: Iterable[str], handler: Handler, stop: threading.Event) -> None:
        names = list(channels)
        for channel in names:
            self._subscribe(channel, handler)
        try:
            stop.wait()
        finally:
            for channel in names:
                self._unsubscribe(channel, handler)

    def subscriber(self) -> Subscriber:
        return _LocalSubscriber(self)

    def _live(self, key: str) -> bytes | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._values[key]
            return None
        return entry[0]

    def set_flag(self, key: str, ttl_ms: int) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._values[key] = (b"1", time.monotonic() + ttl_ms / 1000)
            return True

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        with self._lock:
            self._values[key] = (value, time.monotonic() + ttl_s)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._live(key)

    def claim(self, key: str, value: bytes) -> bytes:
        with self._lock:
            held = self._live(key)
            if held is None:
                self._values[key] = (value, float("inf"))
                held = value
            return held

    def delete(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)

    def add_counts(self, key: str, amounts: dict[str, float]) -> None:
        with self._lock:
            counts = self._counts[key]
            for field, amount in amounts.items():
                counts[field] += amount

    def counts(self, key: str) -> dict[str, float]:
        with self._lock:
            return dict(self._counts.get(key, {}))

    def leader_lock(self, key: str, ttl: float) -> LeaderLock:
        return _LocalLock()

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass
