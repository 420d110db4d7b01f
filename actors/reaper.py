"""Kill orphaned job commands: processes left behind by a worker process that died.

Only the standard library here: the watchdog (actors/watchdog.py) runs this in a process of
its own, started without the service's dependencies.

A command runs in its own session, so it survives a worker killed with SIGKILL. Every job
command carries `JOBRUNNER_WORKER=<host>:<pid>` (`<host>:dev-<pid>` for `jobrunner dev`) in its
environment; a process on this host whose worker pid no longer belongs to a live Dramatiq worker
(or `jobrunner dev`, whose worker runs in its own process) is an orphan, and its whole process
group is killed. Every worker process runs this at start and every few seconds, well within the
lease timeout after which the sweeper may run the job again elsewhere.
"""

from __future__ import annotations

import itertools
import os
import signal
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
MARKER = b"JOBRUNNER_WORKER="
#: marks the worker of a `jobrunner dev` process in its name: `host:dev-pid`
DEV_PREFIX = "dev-"


@dataclass(frozen=True)
class Orphan:
    pid: int
    pgid: int
    job_id: str
    worker: str


def _environ(pid_dir: Path) -> dict[bytes, bytes]:
    try:
        raw = (pid_dir / "environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return {}
    if MARKER not in raw:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return dict(pairs)


def _is_dev(args: list[bytes]) -> bool:
    """A `jobrunner dev` command line: its worker runs jobs inside the web's process."""
    return any(
        program.rsplit(b"/", 1)[-1] == b"jobrunner" and command == b"dev"
        for program, command in itertools.pairwise(args)
    )


def is_live_worker(pid: int) -> bool:
    """True if `pid` is a running Dramatiq worker process or `jobrunner dev` (not a zombie, not
    a reused pid)."""
    try:
        cmdline = (PROC / str(pid) / "cmdline").read_bytes()
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    worker = b"dramatiq" in cmdline or _is_dev(cmdline.split(b"\0"))
    return worker and ") Z " not in stat


def find_orphans(hostname: str) -> list[Orphan]:
    orphans = []
    own_pid = os.getpid()
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == own_pid:
            continue
        env = _environ(entry)
        worker = env.get(b"JOBRUNNER_WORKER", b"").decode(errors="replace")
        host, _, worker_pid = worker.rpartition(":")
        worker_pid = worker_pid.removeprefix(DEV_PREFIX)
        if host != hostname or not worker_pid.isdigit():
            continue
        if int(worker_pid) == own_pid or is_live_worker(int(worker_pid)):
            continue  # this process's own commands, or another live worker's
        try:
            pgid = os.getpgid(int(entry.name))
        except ProcessLookupError:
            continue
        job_id = env.get(b"JOBRUNNER_JOB_ID", b"?").decode(errors="replace")
        orphans.append(Orphan(int(entry.name), pgid, job_id, worker))
    return orphans


def reap(hostname: str) -> list[Orphan]:
    """Kill the process group of every orphan on this host; return what was found."""
    orphans = find_orphans(hostname)
    for pgid in {orphan.pgid for orphan in orphans}:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return orphans


def commands_of(worker: str) -> set[int]:
    """The process groups of the commands that the worker named `worker` started."""
    groups = set()
    wanted = worker.encode()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        if _environ(entry).get(b"JOBRUNNER_WORKER") != wanted:
            continue
        try:
            groups.add(os.getpgid(int(entry.name)))
        except ProcessLookupError:
            continue
    return groups


def kill_commands_of(worker: str) -> set[int]:
    """SIGKILL the process group of every command of this worker; return the groups."""
    groups = commands_of(worker)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return groups
