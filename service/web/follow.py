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
CLOSED = object()


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


class OutputHub:
    """The live output subscriptions of one web process: one subscription on the bus
    (service.bus), and a queue per follower."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.keys = dispatcher.keys
        self.followers: dict[int, set[asyncio.Queue[Message]]] = {}
        self.closed = False
        self._subscriber: Subscriber | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    def close(self) -> None:
        """End every follow stream (the web is shutting down); they end cleanly."""
        self.closed = True
        for queues in self.followers.values():
            for queue in queues:
                queue.put_nowait(CLOSED)

    async def stop(self) -> None:
        self.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    # --- subscriptions ----------------------------------------------------------------

    async def subscribe(self, job_id: int) -> asyncio.Queue[Message]:
        queue: asyncio.Queue[Message] = asyncio.Queue()
        first = job_id not in self.followers
        self.followers.setdefault(job_id, set()).add(queue)
        if first and self._subscriber is not None:
            with contextlib.suppress(BusUnavailable):  # the reader subscribes it on reconnect
                await self._subscriber.subscribe(self.keys.output_channel(job_id))
        return queue

    async def unsubscribe(self, job_id: int, queue: asyncio.Queue[Message]) -> None:
        queues = self.followers.get(job_id, set())
        queues.discard(queue)
        if queues:
            return
        self.followers.pop(job_id, None)
        if self._subscriber is not None:
            with contextlib.suppress(BusUnavailable):
                await self._subscriber.unsubscribe(self.keys.output_channel(job_id))

    def _deliver(self, job_id: int, raw: bytes) -> None:
        message = parse(raw)
        if message is None:
            return
        for queue in self.followers.get(job_id, ()):
            queue.put_nowait(message)

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


async def follow(
    hub: OutputHub, job_id: int, start: int, sse: bool, load: Load
) -> AsyncIterator[bytes]:
    """The output of a job from byte `start`, then as it is printed, until the job is final."""
    stream = _Stream(start, sse)
    queue = await hub.subscribe(job_id)  # before reading the database: nothing falls between
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
        announced: AttemptEnd | None = None
        while not hub.closed:
            try:
                pause = IDLE_CHECKS_S[min(idle, len(IDLE_CHECKS_S) - 1)]
                message = await asyncio.wait_for(queue.get(), pause)
                idle = 0
            except TimeoutError:
                idle += 1
                stored = await load()  # an end message may have been lost
                if _over(stored):
                    break
                for part in stream.keepalive():
                    yield part
                # ask again: a worker that started the job since may not have heard us
                await hub.request_output(job_id, stream.sent)
                continue
            if isinstance(message, Chunk):
                for part in stream.data(message.offset, message.data):
                    yield part
            elif isinstance(message, AttemptEnd) and message.final:
                stored = await load()
                if _over(stored):
                    announced = message
                    break
                # the database does not say so: the job was retried meanwhile, or the message
                # came first; follow on (the next read comes after IDLE_CHECKS_S[0])
            elif message is CLOSED:
                return
        else:
            return  # the web shuts down: the client reconnects elsewhere
        for part in stream.end(stored, announced):
            yield part
    finally:
        await hub.unsubscribe(job_id, queue)
