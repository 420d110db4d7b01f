"""The bounded buffer of one follower, and the chunks held until a hole is filled."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.live import Budget
from service.web import follow
from service.web.follow import RESYNC, AttemptEnd, Chunk, FollowerBuffer, _Held, _Stream


def drain(buffer: FollowerBuffer) -> list[object]:
    async def all_items() -> list[object]:
        items = []
        while True:
            try:
                items.append(await buffer.get(0.01))
            except TimeoutError:
                return items

    return asyncio.run(all_items())


def test_a_buffer_that_overflows_keeps_the_end_and_asks_for_a_resync_once() -> None:
    buffer = FollowerBuffer(limit=10)
    buffer.put(Chunk(0, b"12345"))
    buffer.put(Chunk(5, b"67890"))
    buffer.put(AttemptEnd("running"))
    buffer.put(Chunk(10, b"x"))  # over the limit: the chunks go, one RESYNC comes
    buffer.put(Chunk(11, b"y" * 20))  # still over: no second RESYNC
    buffer.put(Chunk(31, b"z"))
    assert drain(buffer) == [AttemptEnd("running"), RESYNC, Chunk(31, b"z")]
    assert buffer.size == 0 and buffer.overflows == 2


def test_held_chunks_wait_for_the_hole_then_give_up_as_a_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = _Stream(0, sse=True)
    held = _Held()
    held.hold(Chunk(6, b"world\n"))
    assert held.release(stream) == []  # byte 0 to 6 not sent yet: wait
    assert stream.data(0, b"hello ")  # the stored output filled the hole
    sent = held.release(stream)
    assert b"world" in b"".join(sent) and not held
    held.hold(Chunk(20, b"late\n"))
    monkeypatch.setattr(follow, "CATCH_UP_DEADLINE_S", 0.0)
    events = b"".join(held.release(stream))
    assert events.startswith(b"id: 20\nevent: gap\n")  # said, never silent
    assert b"late" in events and stream.sent == 25


def test_a_budget_lets_a_burst_through_then_the_rate() -> None:
    budget = Budget(rate=1000, burst=100)
    assert budget.take(100)
    assert not budget.take(50)
    budget.at = time.monotonic() - 0.05  # 50 ms later: 50 bytes more
    assert budget.take(40)
    assert not budget.take(100)
