"""actors.consumer.Slots: a worker process takes no more wake-ups than it has idle threads."""

from __future__ import annotations

import threading
import time

from actors.consumer import Slots


def test_takes_at_most_what_is_free_and_gets_it_back() -> None:
    slots = Slots(3)
    assert slots.take(2) == 2
    assert slots.take(5) == 1
    assert slots.take(1) == 0 and slots.free == 0
    slots.give()
    assert slots.free == 1 and slots.take(4) == 1


def test_a_closed_process_takes_nothing() -> None:
    slots = Slots(2)
    slots.close()
    assert slots.take(1) == 0 and slots.free == 0


def test_a_waiting_consumer_wakes_when_a_thread_is_done() -> None:
    slots = Slots(1)
    assert slots.take(1) == 1
    threading.Timer(0.05, slots.give).start()
    started = time.monotonic()
    slots.wait_free(timeout=30)
    assert time.monotonic() - started < 20  # woken by the give, not by the timeout
    assert slots.free == 1
