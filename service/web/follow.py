"""Following a job's output live (`GET /jobs/{id}/output?follow=1`), in a web process.

One `OutputHub` per web process holds one Redis pub/sub connection (async, no thread) and
subscribes to the channel of each job that someone follows, fanning messages out to the
followers' queues. A follower costs a queue and a socket: no thread, and no database query
but at its start, at the job's end, and after each of `IDLE_CHECKS_S` while nothing comes (in
case an end message was lost, or the job ended before its worker heard the follower). Workers
publish what a command prints and the end of each attempt, once a follower has asked: a
follower that just subscribed asks the worker for what was printed before (byte offsets make
the joins exact), and asks again after each idle pause.

With `Accept: text/event-stream` the stream is Server-Sent Events: an `output` event per chunk
(its data a JSON string, its `id` the byte offset after it, so `Last-Event-ID` resumes without
loss or repeat), `gap` when bytes were dropped by the output bound, and a final `end` event with
the job's state, exit code and last error. Otherwise it is the raw bytes, chunked.

A follower never loses a byte silently. What the hub holds for one follower is bounded
(`FOLLOWER_BUFFER_BYTES`): a follower that does not read falls behind, its buffer is dropped and
it catches up from the stored output when it reads again, so it costs the web a bounded amount
of memory and never stalls the one subscriber that serves every other follower. A hole in the
live offsets (a message dropped by that bound, by a worker's publishing budget, or by a
reconnection to Redis) is filled the same way: live chunks after the hole wait until the stored
output (saved by the worker every second) covers it, for up to `CATCH_UP_DEADLINE_S`. Bytes the
stored output no longer has (beyond the job's output limit) are a `gap` event, never a silence.

A stream ends only when the database says the job is final, or gone: end messages from workers
(and from the web that deleted a job) are only a cue to read it. So the `end` event carries the
job's real final state, or `deleted` (for a job deleted while followed); a job that was deleted
the moment it ended (retention 0) ends with the state its worker announced. A web process that
shuts down ends its streams without an `end` event: the client reconnects elsewhere.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import structlog

from service.bus import BusUnavailable, Subscriber
from service.dispatch import JOB_DELETED, Dispatcher
from service.queries import StoredOutput
from service.states import FINAL

log = structlog.get_logger(__name__)

#: while nothing comes, a follower reads the job again after these pauses (then every last
#: one): soon at first, since a short job may end before its worker heard the follower
IDLE_CHECKS_S = (1.0, 2.0, 4.0, 8.0, 15.0)
#: live output the hub holds for one follower that has not read it yet
FOLLOWER_BUFFER_BYTES = 1024 * 1024
#: while live chunks wait for the stored output to fill a hole before them: how often to read
#: it, and for how long before those bytes are given up as a gap
CATCH_UP_POLL_S = 0.25
CATCH_UP_DEADLINE_S = 3.0
CLOSED = object()
#: the follower missed live messages (its buffer overflowed, or the hub reconnected to Redis):
#: read the stored output
RESYNC = object()


@dataclass(frozen=True)
class Chunk:
    offset: int
    data: bytes


@dataclass(frozen=True)
class AttemptEnd:
    state: str
    exit_code: int | None = None
    last_error: str | None = None

    @property
    def final(self) -> bool:
        """The job is final (or gone) now, as far as this message knows: time to read it."""
        return self.state in FINAL or self.state == JOB_DELETED


Message = Chunk | AttemptEnd | object


def parse(message: bytes) -> Chunk | AttemptEnd | None:
    if message.startswith(b"C"):
        head, _, data = message.partition(b" ")
        return Chunk(int(head[1:]), data)
    if message.startswith(b"E["):
        try:
            state, exit_code, last_error = json.loads(message[1:])
        except (ValueError, TypeError):
            return None
        return AttemptEnd(str(state), exit_code, last_error)
    if message.startswith(b"E"):  # from a worker of the version before: the state only
        return AttemptEnd(message[1:].decode(errors="replace"))
    return None


class FollowerBuffer:
    """The messages waiting for one follower, at most FOLLOWER_BUFFER_BYTES of output: past
    that, its chunks are dropped for one RESYNC (the stored output has them)."""

    def __init__(self, limit: int = FOLLOWER_BUFFER_BYTES) -> None:
        self.limit = limit
        self.size = 0
        self.overflows = 0
        self._items: deque[Message] = deque()
        self._ready = asyncio.Event()

    def put(self, message: Message) -> None:
        if isinstance(message, Chunk):
            if self.size + len(message.data) > self.limit:
                self.overflows += 1
                self._items = deque(item for item in self._items if not isinstance(item, Chunk))
                self.size = 0
                message = RESYNC
            else:
                self.size += len(message.data)
        if message is RESYNC and RESYNC in self._items:
            return
        self._items.append(message)
        self._ready.set()

    async def get(self, timeout: float) -> Message:
        """The next message; TimeoutError when none comes within `timeout` seconds."""
        if not self._items:
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), timeout)
        item = self._items.popleft()
        if isinstance(item, Chunk):
            self.size -= len(item.data)
        return item


class OutputHub:
    """The live output subscriptions of one web process: one subscription on the bus
    (service.bus), and a queue per follower."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.keys = dispatcher.keys
        self.followers: dict[int, set[FollowerBuffer]] = {}
        self.closed = False
        self._subscriber: Subscriber | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    def close(self) -> None:
        """End every follow stream (the web is shutting down); they end cleanly."""
        self.closed = True
        for buffers in self.followers.values():
            for buffer in buffers:
                buffer.put(CLOSED)

    async def stop(self) -> None:
        self.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    # --- subscriptions ----------------------------------------------------------------

    async def subscribe(self, job_id: int) -> FollowerBuffer:
        buffer = FollowerBuffer()
        first = job_id not in self.followers
        self.followers.setdefault(job_id, set()).add(buffer)
        if first and self._subscriber is not None:
            with contextlib.suppress(BusUnavailable):  # the reader subscribes it on reconnect
                await self._subscriber.subscribe(self.keys.output_channel(job_id))
        return buffer

    async def unsubscribe(self, job_id: int, buffer: FollowerBuffer) -> None:
        buffers = self.followers.get(job_id, set())
        buffers.discard(buffer)
        if buffers:
            return
        self.followers.pop(job_id, None)
        if self._subscriber is not None:
            with contextlib.suppress(BusUnavailable):
                await self._subscriber.unsubscribe(self.keys.output_channel(job_id))

    def _deliver(self, job_id: int, raw: bytes) -> None:
        message = parse(raw)
        if message is None:
            return
        for buffer in self.followers.get(job_id, ()):
            buffer.put(message)  # never waits: a follower that does not read drops its own

    async def request_output(self, job_id: int, offset: int) -> None:
        if self._subscriber is None:
            return  # the bus is away: the follower's checks of the database go on
        with contextlib.suppress(BusUnavailable):
            await self._subscriber.publish(self.keys.follow_channel, f"{job_id} {offset}".encode())

    async def _read(self) -> None:
        """The one reader of this process's subscription; reconnects after an outage."""
        while True:
            subscriber = self.dispatcher.bus.subscriber()
            try:
                channels = [self.keys.hub_channel]
                channels += [self.keys.output_channel(job) for job in self.followers]
                await subscriber.subscribe(*channels)
                self._subscriber = subscriber
                for buffers in self.followers.values():  # messages may have been lost meanwhile
                    for buffer in buffers:
                        buffer.put(RESYNC)
                while True:
                    message = await subscriber.get_message(timeout=1.0)
                    if message is None:
                        continue
                    job_id = self.keys.output_job(message[0])
                    if job_id is not None:
                        self._deliver(job_id, message[1])
            except asyncio.CancelledError:
                raise
            except BusUnavailable as exc:
                log.warning("live output unavailable; reconnecting", error=str(exc))
                await asyncio.sleep(1.0)
            finally:
                self._subscriber = None
                with contextlib.suppress(Exception):
                    await subscriber.aclose()


# --- the streams ---------------------------------------------------------------------------


#: reads the job's output and state; None once the job is gone
Load = Callable[[], Awaitable[StoredOutput | None]]


def _over(stored: StoredOutput | None) -> bool:
    return stored is None or stored.state in FINAL


class _Stream:
    """One follower: what it has sent, and how to format it."""

    def __init__(self, start: int, sse: bool) -> None:
        self.sent = start
        self.sse = sse
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def data(self, offset: int, data: bytes) -> list[bytes]:
        """The bytes of `data` (at `offset`) not sent yet, as this stream sends them."""
        out: list[bytes] = []
        if offset > self.sent:
            out += self._event("gap", json.dumps({"from": self.sent, "to": offset}), offset)
            self.sent = offset
        fresh = data[self.sent - offset :] if offset + len(data) > self.sent else b""
        if not fresh:
            return out
        self.sent += len(fresh)
        if not self.sse:
            return [*out, fresh]
        text = self.decoder.decode(fresh)
        pending = len(self.decoder.getstate()[0])  # bytes of a character not complete yet
        if text:
            out += self._event("output", json.dumps(text), self.sent - pending)
        return out

    def end(self, stored: StoredOutput | None, announced: AttemptEnd | None = None) -> list[bytes]:
        """The end of the stream: the job as the database has it, final; or, when it is gone,
        as its last attempt's end announced it (a job deleted as soon as it ended), else
        `deleted`."""
        out: list[bytes] = []
        if stored is not None:
            out = self.data(stored.offset, stored.data)
            result = [stored.state, stored.exit_code, stored.last_error]
        elif announced is not None and announced.state in FINAL:
            result = [announced.state, announced.exit_code, announced.last_error]
        else:
            result = [JOB_DELETED, None, None]
        summary = dict(zip(("state", "exit_code", "last_error"), result, strict=True))
        return out + self._event("end", json.dumps(summary), self.sent)

    def _event(self, name: str, data: str, event_id: int) -> list[bytes]:
        if not self.sse:
            return []
        return [f"id: {event_id}\nevent: {name}\ndata: {data}\n\n".encode()]

    def keepalive(self) -> list[bytes]:
        return [b": keepalive\n\n"] if self.sse else []


class _Held:
    """Live chunks that came after a hole in the offsets, held (at most
    FOLLOWER_BUFFER_BYTES, the newest) until the stored output covers the hole."""

    def __init__(self) -> None:
        self.chunks: deque[Chunk] = deque()
        self.size = 0
        self.since: float | None = None  # when the oldest hole was seen

    def __bool__(self) -> bool:
        return self.since is not None

    def hold(self, chunk: Chunk) -> None:
        if self.since is None:
            self.since = time.monotonic()
        self.chunks.append(chunk)
        self.size += len(chunk.data)
        while self.size > FOLLOWER_BUFFER_BYTES and len(self.chunks) > 1:
            self.size -= len(self.chunks.popleft().data)

    def release(self, stream: _Stream) -> list[bytes]:
        """Send what the stream can send now: the chunks it has reached, or all of them (the
        bytes before them given up as a gap) once the hole is older than the deadline."""
        assert self.since is not None
        give_up = time.monotonic() - self.since >= CATCH_UP_DEADLINE_S
        out: list[bytes] = []
        while self.chunks and (give_up or self.chunks[0].offset <= stream.sent):
            chunk = self.chunks.popleft()
            self.size -= len(chunk.data)
            out += stream.data(chunk.offset, chunk.data)
        if not self.chunks:
            self.since = None
        elif give_up:  # not reached: a newer hole
            self.since = time.monotonic()
        return out


async def follow(
    hub: OutputHub, job_id: int, start: int, sse: bool, load: Load
) -> AsyncIterator[bytes]:
    """The output of a job from byte `start`, then as it is printed, until the job is final."""
    stream = _Stream(start, sse)
    buffer = await hub.subscribe(job_id)  # before reading the database: nothing falls between
    try:
        stored = await load()
        if stored is None or stored.state in FINAL:
            for part in stream.end(stored):
                yield part
            return
        for part in stream.data(stored.offset, stored.data):
            yield part
        await hub.request_output(job_id, stream.sent)
        idle = 0
        read_at = time.monotonic()
        held = _Held()
        announced: AttemptEnd | None = None
        while not hub.closed:
            pause = CATCH_UP_POLL_S if held else IDLE_CHECKS_S[min(idle, len(IDLE_CHECKS_S) - 1)]
            try:
                message: Message | None = await buffer.get(pause)
            except TimeoutError:
                message = None
            if message is CLOSED:
                return
            if isinstance(message, Chunk):
                idle = 0
                if not held and message.offset <= stream.sent:
                    for part in stream.data(message.offset, message.data):
                        yield part
                    continue
                held.hold(message)  # a hole before it: the stored output fills it
                if time.monotonic() - read_at < CATCH_UP_POLL_S:
                    continue
            elif isinstance(message, AttemptEnd):
                idle = 0
                if not message.final:
                    continue
                stored = await load()
                if _over(stored):
                    announced = message
                    break
                # the database does not say so: the job was retried meanwhile, or the message
                # came first; follow on (the next read comes after IDLE_CHECKS_S[0])
                continue
            elif message is None and not held:
                idle += 1
            # a pause without messages (an end message may have been lost), a resync, or a
            # hole to fill: read the stored output, and send what it has that we have not
            stored = await load()
            read_at = time.monotonic()
            if _over(stored):
                break
            assert stored is not None
            for part in stream.data(stored.offset, stored.data):
                yield part
            if held:
                for part in held.release(stream):
                    yield part
            if message is None and not held:
                for part in stream.keepalive():
                    yield part
                # ask again: a worker that started the job since may not have heard us
                await hub.request_output(job_id, stream.sent)
        else:
            return  # the web shuts down: the client reconnects elsewhere
        for part in stream.end(stored, announced):
            yield part
    finally:
        await hub.unsubscribe(job_id, buffer)
