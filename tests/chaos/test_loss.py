"""Lost workers: noticed within the lease, and never taken for lost while their commands run.

(a) a worker group SIGKILLed: its job is final within 20 s (default lease 15 s) and no copy
    of its command survives; (b) a worker process frozen with SIGSTOP for longer than the lease
    while its command runs: its watchdog kills the command before the job may run elsewhere;
(3) a worker that starts on the machine of a dead one releases the dead one's attempts at once.

Workers play different machines (JOBRUNNER_MACHINE_ID) where a test needs the sweeper's path:
on one machine, a live worker sees a dead sibling's pid gone and releases it at once (3).
"""

from __future__ import annotations

import os
import signal
import statistics
import time

import pytest

from tests.chaos.conftest import Stack, draw_ledger, runs_by_job, stamps_of
from tests.chaos.test_chaos import assert_clean
from tests.support import wait_for

pytestmark = pytest.mark.chaos
#: how many kills the detection-delay scenario makes (the closing note's figure used 10)
KILLS = int(os.environ.get("CHAOS_KILLS", "1"))


def row_of(stack: Stack, job_id: int) -> dict:
    with stack.engine.begin() as conn:
        row = conn.exec_driver_sql(
            "SELECT state, attempts, last_error, end_reason, locked_by FROM jobs WHERE id = %s",
            (job_id,),
        ).one()
    return dict(row._mapping)


def running_on(stack: Stack, job_id: int) -> str:
    return wait_for(
        lambda: row_of(stack, job_id)["state"] == "running" and row_of(stack, job_id)["locked_by"],
        timeout=20,
        what=f"job {job_id} to run",
    )


@pytest.mark.timeout(60 + 30 * KILLS)
def test_a_killed_worker_is_noticed_within_the_lease(stack: Stack) -> None:
    # the defaults: lease 15 s, presence renewed every 2 s
    stack.env.pop("JOBRUNNER_LEASE_TIMEOUT")
    stack.env["JOBRUNNER_HEARTBEAT_INTERVAL"] = "2"
    stack.start_web()
    stack.start_worker("sweeper", JOBRUNNER_MACHINE_ID="machine-b", WORKER_QUEUES="other")
    delays = []
    for kill in range(KILLS):
        name = f"doomed{kill}"
        stack.start_worker(name, JOBRUNNER_MACHINE_ID="machine-a")
        job_id = stack.submit(command="bin/tick.sh 600", max_retries=0)
        assert job_id is not None
        running_on(stack, job_id)
        stack.workers[name].kill_group()
        killed_at = time.monotonic()
        # its watchdog sees it die and kills its command at once
        wait_for(lambda: stack.commands() == [], timeout=10, what="no command left")
        wait_for(
            lambda job_id=job_id: row_of(stack, job_id)["state"] == "failed",
            timeout=40,
            interval=0.1,
            what="the job to be declared lost",
        )
        delays.append(time.monotonic() - killed_at)
        row = row_of(stack, job_id)
        assert (row["last_error"], row["end_reason"]) == ("worker lost", "worker_lost")
    ledger = draw_ledger(
        f"worker SIGKILLed x{KILLS} (lease 15 s): kill -> job final "
        f"median {statistics.median(delays):.1f} s, max {max(delays):.1f} s",
        stack,
    )
    assert_clean(ledger, stack)
    assert max(delays) < 20, delays


def test_a_frozen_worker_cannot_run_a_job_twice(stack: Stack) -> None:
    # lease 4 s: the frozen worker's watchdog kills its command after 0.6 x 4 = 2.4 s
    stack.env["JOBRUNNER_LEASE_TIMEOUT"] = "4"
    stack.env["JOBRUNNER_HEARTBEAT_INTERVAL"] = "0.5"
    stack.start_web()
    stack.start_worker("frozen", JOBRUNNER_MACHINE_ID="machine-a")
    job_id = stack.submit(command="bin/tick.sh 100", max_retries=1)
    assert job_id is not None
    worker_pid = int(running_on(stack, job_id).rsplit(":", 1)[1])
    wait_for(lambda: job_id in stamps_of(stack.stamps, "tick"), timeout=10, what="a tick")
    os.kill(worker_pid, signal.SIGSTOP)  # the process that runs the job: it cannot act now
    try:
        stack.start_worker("other", JOBRUNNER_MACHINE_ID="machine-b")
        wait_for(
            lambda: len(runs_by_job(stack.stamps).get(job_id, [])) == 2,
            timeout=30,
            what="the job to run again elsewhere",
        )
    finally:
        os.kill(worker_pid, signal.SIGCONT)
    stack.wait_all_final(timeout=60)

    first, second = sorted(runs_by_job(stack.stamps)[job_id])
    ledger = draw_ledger(
        "worker process frozen (SIGSTOP) longer than the lease mid-job: its command ended "
        f"{second[0] - first[1]:.1f} s before the job ran elsewhere",
        stack,
    )
    assert_clean(ledger, stack)
    assert first[1] < second[0], "the frozen worker's command outlived its lease"
    assert ledger.succeeded == 1 and ledger.runs == 2, ledger.line()


def test_a_restarted_worker_releases_its_predecessors_attempts_at_once(stack: Stack) -> None:
    # a long lease: what releases the job here must be the restart, not the lease
    stack.env["JOBRUNNER_LEASE_TIMEOUT"] = "30"
    stack.env["JOBRUNNER_HEARTBEAT_INTERVAL"] = "1"
    stack.start_web()
    stack.start_worker("first", JOBRUNNER_MACHINE_ID="machine-a")
    job_id = stack.submit(command="bin/tick.sh 30", max_retries=1)
    assert job_id is not None
    running_on(stack, job_id)
    stack.workers["first"].kill_group()
    stack.start_worker("restarted", JOBRUNNER_MACHINE_ID="machine-a")
    ready = time.monotonic()
    wait_for(
        lambda: row_of(stack, job_id)["attempts"] == 2,
        timeout=10,
        what="the restarted worker to release and rerun the job",
    )
    released_after = time.monotonic() - ready
    stack.wait_all_final(timeout=60)

    ledger = draw_ledger(
        f"worker SIGKILLed and restarted on its machine: job rerun {released_after:.1f} s "
        "after the restart (lease 30 s)",
        stack,
    )
    assert_clean(ledger, stack)
    assert ledger.succeeded == 1 and ledger.runs == 2, ledger.line()
    assert released_after < 10
