"""The orphan reaper, with real processes: it kills what a dead worker left, nothing else."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest

from actors import reaper
from tests.support import PROCESS_DEADLINE, processes_with, wait_for


def spawn(marker: str, worker: str) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ["PATH"], "JOBRUNNER_WORKER": worker, "JOBRUNNER_JOB_ID": "42"}
    return subprocess.Popen(
        ["/bin/sh", "-c", f"{marker} & {marker}"], env=env, start_new_session=True
    )


def sleeps(marker: str) -> list[str]:
    """The two `sleep` processes a spawned command runs (not the shell that started them)."""
    return [line for line in processes_with(marker) if line.split(": ", 1)[1].strip() == marker]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("prefix", ["", "dev-"])
def test_kills_the_group_of_a_command_whose_worker_is_dead(prefix: str) -> None:
    marker = f"sleep 6{uuid.uuid4().int % 1000:03d}"
    # A host name of its own: the reaper of any worker running on this machine (another
    # test's) would rightly kill an orphan of this host before the test's own reap saw it.
    host = f"reaper-test-{uuid.uuid4().hex[:8]}"
    orphan = spawn(marker, f"{host}:{prefix}{dead_pid()}")
    try:
        wait_for(lambda: len(sleeps(marker)) == 2, timeout=PROCESS_DEADLINE, what="the command")
        found = reaper.reap(host)
        assert any(o.pgid == orphan.pid and o.job_id == "42" for o in found)
        orphan.wait(timeout=PROCESS_DEADLINE)
        wait_for(lambda: processes_with(marker) == [], timeout=PROCESS_DEADLINE, what="no survivor")
    finally:
        if orphan.poll() is None:
            os.killpg(orphan.pid, 9)
            orphan.wait()


def test_leaves_commands_of_live_workers_and_of_other_hosts() -> None:
    marker = f"sleep 7{uuid.uuid4().int % 1000:03d}"
    host = socket.gethostname()
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    live = subprocess.Popen([*sleep, "dramatiq"])
    dev = subprocess.Popen([*sleep, "/usr/local/bin/jobrunner", "dev", "--port", "8001"])
    kept = [
        spawn(marker, f"{host}:{live.pid}"),
        spawn(marker, f"{host}:dev-{dev.pid}"),  # `jobrunner dev` runs its jobs itself
        spawn(marker, f"{host}:{dev.pid}"),
        spawn(marker, f"another-host:{dead_pid()}"),
    ]
    # (a process's own commands are skipped too, but any other reaper on this host, such as
    # the integration tests' worker, would rightly kill a command "of" this pytest process)
    try:
        wait_for(lambda: len(sleeps(marker)) == 8, timeout=PROCESS_DEADLINE, what="the commands")
        found = reaper.reap(host)
        assert all(o.pgid not in {proc.pid for proc in kept} for o in found)
        assert len(sleeps(marker)) == 8
    finally:
        for proc in kept:
            os.killpg(proc.pid, 9)
            proc.wait()
        for proc in (live, dev):
            proc.kill()
            proc.wait()
