"""Kill orphaned job commands: processes left behind by a worker process that died.

Only the standard library here: the watchdog (actors/watchdog.py) runs this in a process of
its own, started without the service's dependencies.

A command runs in its own session, so it survives a worker killed with SIGKILL. Every job
command carries `JOBRUNNER_WORKER=<host>:<pid>` (`<host>:dev-<pid>` for `jobrunner dev`) in its
environment; a process on this host whose worker pid no longer belongs to a live worker is an
orphan, and its whole process group is killed. A worker process says it is alive by holding an
abstract unix socket named `jobrunner-worker-<pid>` (`announce_alive`): it vanishes with the
process, and a process that reuses the pid does not have it. Every worker process runs this
at start and every few seconds, well within the lease timeout after which the sweeper may run
the job again elsewhere.
"""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from actors import containment

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


ALIVE_PREFIX = "jobrunner-worker-"
_announced: list[socket.socket] = []


def announce_alive() -> None:
    """Hold this process's liveness socket (see the module docstring), once per process."""
    pid = os.getpid()
    if any(sock.getsockname() == f"\0{ALIVE_PREFIX}{pid}" for sock in _announced):
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(f"\0{ALIVE_PREFIX}{pid}")
    except OSError:  # a forked child's parent holds the name; the child has its own pid
        sock.close()
        return
    _announced.append(sock)
    atexit.register(sock.close)


def announced_pids() -> set[int]:
    """The pids whose liveness socket exists (in this network namespace)."""
    found: set[int] = set()
    try:
        lines = (PROC / "net" / "unix").read_text().splitlines()[1:]
    except OSError:
        return found
    marker = "@" + ALIVE_PREFIX
    for line in lines:
        path = line.rsplit(" ", 1)[-1]
        if path.startswith(marker) and path[len(marker) :].isdigit():
            found.add(int(path[len(marker) :]))
    return found


def is_live_worker(pid: int, announced: set[int] | None = None) -> bool:
    """True if `pid` is a live worker process: it holds its liveness socket, or (a worker of
    an older version) it is a running Dramatiq worker or `jobrunner dev` (not a zombie)."""
    if pid in (announced if announced is not None else announced_pids()):
        return True
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
    announced = announced_pids()
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == own_pid:
            continue
        env = _environ(entry)
        worker = env.get(b"JOBRUNNER_WORKER", b"").decode(errors="replace")
        host, _, worker_pid = worker.rpartition(":")
        worker_pid = worker_pid.removeprefix(DEV_PREFIX)
        if host != hostname or not worker_pid.isdigit():
            continue
        if int(worker_pid) == own_pid or is_live_worker(int(worker_pid), announced):
            continue  # this process's own commands, or another live worker's
        try:
            pgid = os.getpgid(int(entry.name))
        except ProcessLookupError:
            continue
        job_id = env.get(b"JOBRUNNER_JOB_ID", b"?").decode(errors="replace")
        orphans.append(Orphan(int(entry.name), pgid, job_id, worker))
    return orphans


def reap(hostname: str) -> list[Orphan]:
    """Kill the process group of every orphan on this host, and everything in the job cgroups
    of dead worker processes (actors.containment); return the orphans found by marker."""
    orphans = find_orphans(hostname)
    for pgid in {orphan.pgid for orphan in orphans}:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    announced = announced_pids()
    for _pid, path in containment.dead_workers_dirs(lambda pid: is_live_worker(pid, announced)):
        if containment.kill_cgroup(path):
            containment.remove_cgroup(path)
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
    """SIGKILL the process group of every command of this worker, and everything in its job
    cgroups (actors.containment); return the groups."""
    pid = worker.rpartition(":")[2].removeprefix(DEV_PREFIX)
    if pid.isdigit():
        containment.kill_worker_cells(int(pid))
    groups = commands_of(worker)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return groups
