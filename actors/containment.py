"""Keeping everything a job starts inside the job, so that nothing outlives it.

A command runs in a session and process group of its own, and the group is killed at the end
of every attempt; but a process can leave the group (`setsid`, a double fork, a daemon) and,
with `env -i`, even the marker variable the reaper finds orphans by. The kernel offers two ways
to keep such processes attached, and a worker process uses the first it can
(`JOBRUNNER_CONTAINMENT`: `auto`, the default; `cgroup` or `subreaper` to insist on one):

- **cgroup** (cgroup v2 where this process may create cgroups: a root worker on a v2 host, a
  container with a delegated v2 cgroup). The worker process makes `jobrunner-<pid>/` under its
  own cgroup, and in it a cell `slot-<tid>/` for each thread that runs jobs. A command enters
  its thread's cell before it runs anything: the shell that runs it writes its own pid to the
  cell's `cgroup.procs`, through a descriptor the worker opened (the kernel checks the opener's
  rights, so a command that runs as another user gets in too), then puts /dev/null back on its
  stdin. Nothing leaves a cgroup without rights over it, so at the end `cgroup.kill` kills every
  process the command started, however it detached. A command given as `argv` runs behind the
  same small shell (`exec "$@"`); a missing program is still reported as not started. The
  watchdog and the self-fence kill the whole `jobrunner-<pid>/` of a silent worker, and the
  reaper those of dead workers.
- **subreaper** (anywhere else, e.g. a container on a cgroup v1 host). The worker process is a
  child subreaper (`PR_SET_CHILD_SUBREAPER`): a process whose parent dies is handed to the
  worker thread that started the job it came from, instead of to init. At the end of the
  attempt, the thread kills (and reaps) each child of its own that started after the command
  did, again until none is left. What this does not cover: a process that detached from a
  worker process that was then killed (SIGKILL) goes to init; the reaper still kills it if it
  kept the marker variable.

Standard library only: the watchdog (actors/watchdog.py) uses the cgroup part.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

MODES = ("auto", "cgroup", "subreaper")
WORKER_DIR_PREFIX = "jobrunner-"
#: what the shell of a command runs first, in a cell: enter the cell, give stdin back
ENTER_CELL = (
    "echo $$ >&0 || { echo 'jobrunner: could not enter the job cgroup' >&2; exit 125; }; "
    "exec </dev/null; "
)
#: how long to wait for the killed processes of a cell to be gone
KILL_WAIT_S = 5.0
PR_SET_CHILD_SUBREAPER = 36


class ContainmentUnavailable(RuntimeError):
    """The containment asked for (JOBRUNNER_CONTAINMENT) cannot work here."""


class Cell(Protocol):
    """Where one attempt's processes are kept, in the thread that runs it."""

    def command(self, argv: list[str]) -> tuple[list[str], int | None]:
        """The argv to run instead, and the descriptor to give as its stdin (None: /dev/null)."""

    def started(self, pid: int) -> None: ...
    def signal(self, signum: int) -> None:
        """Send `signum` to every process of the attempt (beyond its process group)."""

    def kill(self) -> None:
        """SIGKILL every process of the attempt and wait, within KILL_WAIT_S, until none is left."""


class Containment(Protocol):
    mechanism: str

    def cell(self, job_id: str = "") -> Cell:
        """The cell of the calling thread, for an attempt of job `job_id`."""

    def close(self) -> None: ...


# --- cgroup v2 ---------------------------------------------------------------------------


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted, if it is."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if " - " in line and line.split(" - ", 1)[1].split()[0] == "cgroup2":
            return Path(fields[4])
    return None


def own_cgroup() -> Path | None:
    """This process's cgroup v2 folder, if there is a v2 hierarchy."""
    mount = cgroup2_mount()
    if mount is None:
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return mount / line[3:].lstrip("/")
    return None


def worker_dir(pid: int, base: Path | None = None) -> Path | None:
    """The folder that holds the cells of the worker process `pid` (a sibling in this cgroup)."""
    base = base if base is not None else own_cgroup()
    return None if base is None else base / f"{WORKER_DIR_PREFIX}{pid}"


def _populated(path: Path) -> bool:
    # os.open and os.read, not Path.read_bytes: read for every job, twice
    try:
        fd = os.open(os.path.join(path, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return b"populated 1" in os.read(fd, 4096)
    except OSError:
        return False
    finally:
        os.close(fd)


def kill_cgroup(path: Path, wait: float = KILL_WAIT_S) -> bool:
    """Kill every process in `path` and below; True once none is left (within `wait`)."""
    if not _populated(path):
        return True
    with contextlib.suppress(OSError):
        (path / "cgroup.kill").write_bytes(b"1")
    deadline = time.monotonic() + wait
    while _populated(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def remove_cgroup(path: Path) -> None:
    """Remove `path` and the cgroups below it (they must be empty of processes). Another
    process may be removing them at the same time (the reapers of two worker processes that
    start together, both finding a dead worker's cells): what is gone already is skipped."""
    try:
        children = sorted((p for p in path.iterdir() if p.is_dir()), reverse=True)
    except FileNotFoundError:
        return
    for child in children:
        remove_cgroup(child)
    with contextlib.suppress(OSError):
        path.rmdir()


def kill_worker_cells(pid: int) -> bool:
    """Kill every process in the cells of worker process `pid`; False if it has none here."""
    path = worker_dir(pid)
    if path is None or not path.is_dir():
        return False
    kill_cgroup(path)
    return True


def dead_workers_dirs(is_alive: Callable[[int], bool]) -> Iterator[tuple[int, Path]]:
    """The cell folders of worker processes that `is_alive(pid)` says are gone."""
    base = own_cgroup()
    if base is None or not base.is_dir():
        return
    for path in base.glob(f"{WORKER_DIR_PREFIX}*"):
        pid = path.name.removeprefix(WORKER_DIR_PREFIX)
        if pid.isdigit() and int(pid) != os.getpid() and not is_alive(int(pid)):
            yield int(pid), path


def is_shell_line(argv: list[str]) -> bool:
    """A command given as a shell line (`/bin/sh -c LINE`): its cell runs it in its own shell."""
    return len(argv) == 3 and argv[:2] == ["/bin/sh", "-c"]


@dataclass
class CgroupCell:
    """One thread's cell. Its `cgroup.procs` (handed to each command) and `cgroup.events`
    (read after each) stay open for the thread's jobs: opening them was two opens and two
    closes of cgroupfs files a job, and a read at offset 0 (`pread`) sees the events afresh."""

    path: Path
    _procs: int | None = None
    _events: int | None = None
    #: the last kill left no process in it (none can enter but through `command`)
    emptied: bool = False

    def command(self, argv: list[str]) -> tuple[list[str], int | None]:
        self.emptied = False
        if self._procs is None:
            procs = os.path.join(self.path, "cgroup.procs")
            self._procs = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
        if is_shell_line(argv):
            return ["/bin/sh", "-c", ENTER_CELL + argv[2]], self._procs
        return ["/bin/sh", "-c", ENTER_CELL + 'exec "$@"', "jobrunner-job", *argv], self._procs

    def started(self, pid: int) -> None:
        pass  # the command has its own copy of `cgroup.procs`; ours serves the next one

    def signal(self, signum: int) -> None:
        try:
            pids = (self.path / "cgroup.procs").read_text().split()
        except OSError:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signum)

    def populated(self) -> bool:
        try:
            if self._events is None:
                self._events = os.open(
                    os.path.join(self.path, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC
                )
            return b"populated 1" in os.pread(self._events, 4096, 0)
        except OSError:
            return _populated(self.path)

    def kill(self) -> None:
        self.emptied = not self.populated() or kill_cgroup(self.path)

    def close(self) -> None:
        """Close what it keeps open (the cell is dropped)."""
        for fd in (self._procs, self._events):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._procs = self._events = None


_process_dir: tuple[int, Path] | None = None  # (pid, folder) made by this process
_process_lock = threading.Lock()
_contexts = iter(range(1, 1 << 62))


def _own_worker_dir() -> Path:
    """`jobrunner-<pid>/` of this process, made once (a stale one of a dead process of the
    same pid is killed and removed first)."""
    global _process_dir
    with _process_lock:
        if _process_dir is not None and _process_dir[0] == os.getpid():
            return _process_dir[1]
        path = worker_dir(os.getpid())
        if path is None:
            raise ContainmentUnavailable("no cgroup v2 hierarchy is mounted")
        if path.exists():
            kill_cgroup(path)
            remove_cgroup(path)
        try:
            path.mkdir()
        except OSError as exc:
            raise ContainmentUnavailable(f"cannot create the cgroup {path}: {exc}") from exc
        if not (path / "cgroup.kill").exists():
            remove_cgroup(path)
            raise ContainmentUnavailable("this kernel has no cgroup.kill (Linux 5.14 or later)")
        _process_dir = (os.getpid(), path)
        return path


@dataclass
class CgroupContainment:
    """A cell per thread, under `jobrunner-<pid>/ctx-<n>/` in this process's cgroup (one
    `ctx-<n>` per worker context: `jobrunner dev` and tests may build several)."""

    root: Path
    mechanism: str = "cgroup"
    _cells: dict[int, CgroupCell] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls) -> CgroupContainment:
        root = _own_worker_dir() / f"ctx-{next(_contexts)}"
        try:
            root.mkdir()
            made = cls(root)
            made.cell()  # a cell must take processes: no controller in the way
        except OSError as exc:
            remove_cgroup(root)
            raise ContainmentUnavailable(f"cannot create cells in {root}: {exc}") from exc
        return made

    def cell(self, job_id: str = "") -> CgroupCell:
        tid = threading.get_native_id()
        with self._lock:
            cell = self._cells.get(tid)
            if cell is not None and (cell.emptied or not cell.populated()):
                return cell
            if cell is not None:
                cell.close()
            # new, or its last processes would not die (stuck in the kernel): a fresh one
            name = f"slot-{tid}" if cell is None else f"slot-{tid}-{time.monotonic_ns()}"
            path = self.root / name
            path.mkdir(exist_ok=True)
            self._cells[tid] = cell = CgroupCell(path)
            return cell

    def close(self) -> None:
        global _process_dir
        with self._lock:
            for cell in self._cells.values():
                cell.close()
        kill_cgroup(self.root)
        remove_cgroup(self.root)
        with _process_lock:
            if _process_dir is not None and _process_dir[0] == os.getpid():
                with contextlib.suppress(OSError):
                    _process_dir[1].rmdir()  # the last context of this process: it is empty
                    _process_dir = None  # a later context makes it again


# --- child subreaper ---------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: children of a worker process that are not jobs (the watchdog): never taken for orphans
_exempt: set[int] = set()


def exempt(pid: int) -> None:
    """`pid` is a child this process started that is no job's (see SubreaperContainment)."""
    _exempt.add(pid)


def _now_ticks() -> int:
    """Now, in the clock of /proc/<pid>/stat's start times (clock ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLOCK_TICKS)


@dataclass(frozen=True)
class _Process:
    pid: int
    start: int
    session: int
    job_id: str | None


def _process(pid: int) -> _Process | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    job_id = None
    with contextlib.suppress(OSError):
        for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if item.startswith(b"JOBRUNNER_JOB_ID="):
                job_id = item.split(b"=", 1)[1].decode(errors="replace")
    return _Process(pid, int(fields[19]), int(fields[3]), job_id)


def _children_of_process() -> list[int]:
    """The children of this process: orphans handed to a subreaper go to its main thread (the
    kernel picks the first live thread), whichever thread started their job."""
    try:
        text = Path(f"/proc/self/task/{os.getpid()}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


@dataclass
class SubreaperCell:
    owner: SubreaperContainment
    job_id: str | None = None
    main: int | None = None
    start: int = 0

    def command(self, argv: list[str]) -> tuple[list[str], int | None]:
        self.start = _now_ticks()  # before the fork: its descendants start at or after this
        self.owner.enter(self)
        return argv, None

    def started(self, pid: int) -> None:
        self.main = pid

    def signal(self, signum: int) -> None:
        for pid in self.owner.orphans_of(self):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def kill(self) -> None:
        self.owner.leave(self)
        self.owner.kill_orphans()


@dataclass
class SubreaperContainment:
    """The worker process as child subreaper: every orphan of its jobs becomes a child of its
    main thread. An orphan belongs to the job its marker names (JOBRUNNER_JOB_ID), or whose
    session it is in (the command's session is its pid); failing both (`env -i setsid`), to
    any job that was running when it started: it is killed once none of those runs."""

    mechanism: str = "subreaper"
    _running: dict[int, SubreaperCell] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls) -> SubreaperContainment:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            code = ctypes.get_errno()
            raise ContainmentUnavailable(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(code)}")
        if not Path(f"/proc/self/task/{os.getpid()}/children").exists():
            raise ContainmentUnavailable("/proc/<pid>/task/<tid>/children is missing")
        return cls()

    def cell(self, job_id: str = "") -> SubreaperCell:
        return SubreaperCell(self, job_id or None)

    def enter(self, cell: SubreaperCell) -> None:
        with self._lock:
            self._running[id(cell)] = cell

    def leave(self, cell: SubreaperCell) -> None:
        with self._lock:
            self._running.pop(id(cell), None)

    def _orphans(self) -> list[tuple[_Process, SubreaperCell | None, bool]]:
        """Each orphan: the running cell it belongs to (None: none that runs), and whether
        that is known (False: it only may belong to a cell that runs)."""
        with self._lock:
            running = list(self._running.values())
        mains = {cell.main for cell in running}
        found = []
        for pid in _children_of_process():
            if pid in mains or pid in _exempt:
                continue
            process = _process(pid)
            if process is None:
                continue
            owner = next(
                (
                    cell
                    for cell in running
                    if (process.job_id is not None and process.job_id == cell.job_id)
                    or process.session == cell.main
                ),
                None,
            )
            if owner is not None or process.job_id is not None:
                found.append((process, owner, True))
                continue
            maybe = next((cell for cell in running if cell.start <= process.start), None)
            found.append((process, maybe, False))
        return found

    def orphans_of(self, cell: SubreaperCell) -> list[int]:
        return [process.pid for process, owner, known in self._orphans() if owner is cell and known]

    def kill_orphans(self) -> None:
        """Kill and reap every orphan that belongs to no running attempt, again while killing
        them hands this process their children in turn (within KILL_WAIT_S)."""
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline:
            doomed = [process.pid for process, owner, _ in self._orphans() if owner is None]
            if not doomed:
                return
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            for pid in doomed:
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG) == (0, 0):
                        time.sleep(0.001)  # not dead yet: the next round reaps it

    def close(self) -> None:
        with self._lock:
            self._running.clear()
        self.kill_orphans()


def contain(mode: str) -> Containment:
    """The containment of this worker process: `mode` is one of MODES."""
    if mode not in MODES:
        raise ValueError(f"containment must be one of {', '.join(MODES)}, got {mode!r}")
    if mode in ("auto", "cgroup"):
        try:
            return CgroupContainment.create()
        except ContainmentUnavailable:
            if mode == "cgroup":
                raise
    return SubreaperContainment.create()
