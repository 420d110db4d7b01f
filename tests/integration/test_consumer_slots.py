"""The waking consumer's slots survive a Redis outage: a worker process whose fetch was cut
off, or whose consumer Dramatiq replaced, still takes one wake-up per idle thread.

CI found a worker that took no wake-up ever again after Redis was restarted (every job
submitted after the outage waited until the test gave up): each fetch that failed took the
free slots with it.
"""

from __future__ import annotations

import socket
import uuid

import dramatiq
import pytest
from dramatiq.errors import ConnectionClosed

from actors.consumer import WakingRedisBroker
from service.broker import make_redis_client
from tests.conftest import REDIS_URL

THREADS = 4


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_at(url: str, namespace: str) -> WakingRedisBroker:
    broker = WakingRedisBroker(
        slots=THREADS, client=make_redis_client(url, socket_timeout=2.0), namespace=namespace
    )
    broker.declare_queue("wake")

    @dramatiq.actor(broker=broker, queue_name="wake", actor_name="run_job")
    def run_job() -> None: ...

    return broker


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    """A namespace of this test's own, under the session's (which removes its keys)."""
    return f"{redis_namespace}-slots-{uuid.uuid4().hex[:8]}"


def test_a_fetch_cut_off_by_an_outage_gives_its_slots_back(namespace: str) -> None:
    broker = broker_at(f"redis://127.0.0.1:{closed_port()}/0", namespace)
    consumer = broker.consume("wake", prefetch=THREADS, timeout=100)
    for _ in range(3):  # Dramatiq makes a new consumer after each; the slots stay with the broker
        with pytest.raises(ConnectionClosed):
            next(consumer)
        assert broker.slots.free == THREADS


def test_messages_fetched_but_never_handed_out_free_their_slots(namespace: str) -> None:
    broker = broker_at(REDIS_URL, namespace)
    for _ in range(3):
        broker.enqueue(dramatiq.Message("wake", "run_job", (), {}, {}))
    consumer = broker.consume("wake", prefetch=THREADS, timeout=100)
    first = next(consumer)
    assert first is not None  # one message out to a thread, two more fetched with it
    assert broker.slots.free == THREADS - 3
    consumer.close()  # what Dramatiq does on a connection error, before it makes a new one
    assert broker.slots.free == THREADS - 1  # the thread still holds its slot
    broker.slots.give()  # the thread is done
    assert broker.slots.free == THREADS


def test_a_message_no_thread_will_run_frees_its_slot(namespace: str) -> None:
    """Dramatiq's consumer thread nacks a message for an actor it does not know (a rolling
    deploy that renamed it, say) without handing it to a worker thread."""
    broker = broker_at(REDIS_URL, namespace)
    broker.enqueue(dramatiq.Message("wake", "no_such_actor", (), {}, {}))
    consumer = broker.consume("wake", prefetch=THREADS, timeout=100)
    assert next(consumer) is not None
    assert broker.slots.free == THREADS
