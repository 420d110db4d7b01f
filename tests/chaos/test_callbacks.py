"""Completion callbacks under faults: the sender SIGKILLed, Redis restarted empty, MariaDB
crashed and restarted, a worker's whole process group SIGKILLed, while jobs keep ending.

The ledger compares the events expected (one per job that became final) with those the
receiver got: none may be lost, and a duplicate may only be a redelivery of the same event
(the same webhook-id); every one must carry a valid signature.
"""

from __future__ import annotations

import base64
import collections
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from tests.chaos.conftest import LEDGERS, Stack, draw_ledger
from tests.chaos.servers import MariaDBServer, RedisServer
from tests.chaos.test_chaos import assert_clean, wait_finished
from tests.receiver import Receiver
from tests.support import wait_for

pytestmark = pytest.mark.chaos
SECRET = "whsec_" + base64.b64encode(b"chaos-callback-secret-0123456789").decode()
JOBS = 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(SECRET)
    server.fail_first.add("/flaky")  # a third of the events need a retry
    server.slow["/slow"] = 1.5  # a third are in flight for a while: the kills hit some
    yield server
    server.close()


def senders(stack: Stack) -> list[int]:
    """The pids of this scenario's sender processes (found by their DATABASE_URL)."""
    marker = f"DATABASE_URL={stack.env['DATABASE_URL']}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if not cmdline.endswith(b"-m\0actors.sender\0"):  # not the supervisor
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.timeout(420)
def test_no_event_is_lost_to_crashes_and_restarts(
    stack: Stack, mariadb: MariaDBServer, redis_server: RedisServer, receiver: Receiver
) -> None:
    stack.env.update(
        JOBRUNNER_LEASE_TIMEOUT="15",  # the outage is shorter: running commands go on
        JOBRUNNER_CALLBACK_SECRET=SECRET,
        JOBRUNNER_CALLBACK_ALLOW="127.0.0.1",
        JOBRUNNER_CALLBACK_BACKOFF="0.5",
        JOBRUNNER_CALLBACK_TIMEOUT="2",
        JOBRUNNER_CALLBACK_ATTEMPTS="20",
    )
    stack.start_web()
    stack.start_worker("a")
    stack.start_worker("b")
    paths = ("/ok", "/slow", "/flaky")
    feeder = stack.submit_many(
        JOBS,
        rate=20,
        fields=lambda i: {
            "command": "bin/tick.sh 2",
            "max_retries": 2,
            "callback_url": receiver.url(paths[i % 3]),
        },
    )
    faults = []
    wait_finished(stack, 30)
    # one sender per worker role (a, b): kill both, mid-delivery for some events
    killed = wait_for(lambda: len(senders(stack)) == 2 and senders(stack), what="the senders")
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    faults.append("both senders SIGKILLed")
    wait_for(
        lambda: len(set(senders(stack)) - set(killed)) == 2, timeout=30, what="senders restarted"
    )
    wait_finished(stack, 60)
    redis_server.stop()
    redis_server.start()
    faults.append("Redis restarted empty")
    wait_finished(stack, 90)
    mariadb.stop(crash=True)
    wait_for(lambda: not mariadb.answers(), timeout=10, what="MariaDB down")
    mariadb.start()
    faults.append("MariaDB crashed and restarted")
    wait_finished(stack, 120)
    stack.workers["a"].kill_group()  # its sender and supervisor too
    stack.start_worker("a2")
    faults.append("worker a's process group SIGKILLed")
    feeder.join(timeout=90)
    stack.wait_all_final(timeout=90)
    ledger = draw_ledger("callbacks: " + ", ".join(faults), stack)
    assert_clean(ledger, stack)

    final = {row.id for row in stack.rows() if row.state in ("succeeded", "failed", "cancelled")}
    with stack.engine.begin() as conn:
        urls = dict(conn.execute(sa.text("SELECT id, callback_url FROM jobs")).all())
    expected = {(job_id, urlsplit(urls[job_id]).path) for job_id in final}

    def received() -> dict[tuple[int, str], list[str]]:
        got: dict[tuple[int, str], list[str]] = collections.defaultdict(list)
        for path in paths:
            for item in receiver.got(path):
                got[(item.event["data"]["id"], path)].append(item.webhook_id)
        return got

    def pending() -> int:
        with stack.engine.begin() as conn:
            query = "SELECT COUNT(*) FROM callback_events WHERE state = 'pending'"
            return int(conn.execute(sa.text(query)).scalar_one())

    def all_delivered() -> bool:
        if pending():  # an event its killed sender left in flight comes again, later
            return False
        got = received()
        # a /flaky event counts once its retry after the scripted 500 arrived
        return all(len(got.get(key, [])) >= (2 if key[1] == "/flaky" else 1) for key in expected)

    try:
        wait_for(all_delivered, timeout=120, interval=0.5, what="every event delivered")
    except AssertionError:
        pass  # counted as lost below
    got = received()
    lost = [key for key in expected if key not in got]
    unexpected = [key for key in got if key not in expected]
    ids_per_event = [len(set(ids)) for ids in got.values()]
    redeliveries = (
        sum(len(ids) for ids in got.values()) - len(got) - len([k for k in got if k[1] == "/flaky"])
    )
    unsigned = [r for path in paths for r in receiver.got(path) if not r.verified]
    line = (
        f"callback ledger ({', '.join(faults)}): jobs final={len(final)} "
        f"events expected={len(expected)} received={len(got)} lost={len(lost)} "
        f"unexpected={len(unexpected)} redeliveries (same webhook-id)={redeliveries} "
        f"events with more than one webhook-id={sum(1 for n in ids_per_event if n > 1)} "
        f"unsigned={len(unsigned)}"
    )
    LEDGERS.append(line)
    with (stack.log_dir.parent / "chaos-ledgers.txt").open("a") as ledgers:
        ledgers.write(line + "\n")
    # every accepted job is final; a POST answered 503 (or not at all) as MariaDB crashed may
    # still have committed its job (the COMMIT's answer was lost): it ran, and its event is
    # expected like any other
    assert set(stack.submitted) <= final and stack.submitted, line
    unanswered = stack.statuses[503] + stack.statuses[0]
    assert len(final - set(stack.submitted)) <= unanswered, line
    assert lost == [] and unexpected == [], line
    assert all(n == 1 for n in ids_per_event), line
    assert unsigned == [], line
