"""Run one command as a subprocess: its own session, output captured, timeout and stop enforced.

No database and no broker here. The command runs in a new session (so its process group holds
it and everything it starts); stdout and stderr share one pipe, so the output is interleaved in
the order it was written. A timeout or a stop request sends SIGTERM to the whole group, then
SIGKILL after a grace period; after any exit, whatever is left of the group is killed, so no
grandchild outlives its job. The wait is a poll on the pipe and a pidfd with a short timeout:
never a blocking wait that Dramatiq's interrupts could not break.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from actors.containment import Cell, is_shell_line
from service.job_user import JobUser

READ_SIZE = 65536
#: reads per wakeup at most, so that a command flooding its output still gets its timeout checked
READS_PER_WAKEUP = 16
#: after the command ends, how long to wait for processes that left its group to close the pipe
DRAIN_TIMEOUT_S = 0.5

StopCheck = Callable[[], str | None]


class OutputWriter(Protocol):
    def write(self, chunk: bytes) -> None: ...


@dataclass(frozen=True)
class CommandSpec:
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    timeout: float
    #: the user to run it as (service.job_user); None: the worker's own
    user: JobUser | None = None


@dataclass(frozen=True)
class RunResult:
    """How the command ended.

    `ended` is `exited` (by itself; `returncode` < 0 means killed by that signal from outside),
    `timed_out`, `stopped` (`stop_reason` says why) or `failed_to_start` (`error` says why).
    """

    ended: Literal["exited", "timed_out", "stopped", "failed_to_start"]
    returncode: int | None = None
    stop_reason: str | None = None
    error: str | None = None


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: fall back to polling waitid
        return None


def _has_exited(pid: int) -> bool:
    """True once the process has exited; it stays unreaped, so its pid cannot be reused."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def _as_user(user: JobUser | None) -> dict[str, Any]:
    """Popen's arguments to run as `user`: its uid and gid, no supplementary group (a change
    of uid from root drops every capability too)."""
    if user is None:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": []}


def _resolve(program: str, cwd: Path, env: dict[str, str]) -> str:
    """The file `program` names, found as exec would (PATH unless it holds a slash); raises
    FileNotFoundError or PermissionError as Popen would, so that a missing program behind the
    cell's shell is still a failure to start."""
    # os.path, not pathlib: this runs for every job
    if "/" in program:
        path = os.path.join(cwd, program)
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
        return program
    for folder in os.get_exec_path(env):
        candidate = os.path.join(cwd, folder, program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _read_available(fd: int, output: OutputWriter) -> bool:
    """Read what the pipe holds now (within READS_PER_WAKEUP); False at end of file."""
    for _ in range(READS_PER_WAKEUP):
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        output.write(chunk)
    return True


class _Watch:
    """The pipe and the pidfd of a running command, polled together."""

    def __init__(
        self, proc: subprocess.Popen[bytes], output: OutputWriter, cell: Cell | None
    ) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.output = output
        self.cell = cell
        self.fd = proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.pipe_open = True
        self.exited = False
        self.pidfd = _pidfd_open(proc.pid)
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)
        if self.pidfd is not None:
            self.poller.register(self.pidfd, select.POLLIN)

    def wait(self, seconds: float) -> None:
        """Wait up to `seconds` for output or exit, reading what output arrives."""
        if self.pidfd is None and not self.pipe_open:
            seconds = min(seconds, 0.01)  # nothing to poll on: check the exit often
        for fd, _events in self.poller.poll(max(0.0, seconds) * 1000):
            if fd == self.fd:
                if not _read_available(self.fd, self.output):
                    self.pipe_open = False
                    self.poller.unregister(self.fd)
            elif fd == self.pidfd:
                self.exited = True
        if self.pidfd is None and not self.exited:
            self.exited = _has_exited(self.proc.pid)

    def finish(self) -> int:
        """Kill what is left of the group and of the cell, reap the leader, read the pipe to
        its end."""
        _signal_group(self.proc.pid, signal.SIGKILL)
        returncode = self.proc.wait()
        if self.cell is not None:
            self.cell.kill()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self.pipe_open and time.monotonic() < deadline:
            ready = self.poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
            if any(fd == self.fd for fd, _ in ready) and not _read_available(self.fd, self.output):
                self.pipe_open = False
        self.close()
        return returncode

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def run(
    spec: CommandSpec,
    output: OutputWriter,
    *,
    should_stop: StopCheck,
    kill_grace: float | Callable[[str], float],
    on_start: Callable[[int], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    poll_interval: float = 0.25,
    cell: Cell | None = None,
) -> RunResult:
    """Run the command to its end; see the module docstring for the rules. `cell`: where the
    command and all it starts are kept (actors.containment), killed at the end."""
    argv, stdin = spec.argv, None
    try:
        if cell is not None:
            # a shell line runs as the cell's own shell, whose absence fails Popen itself; a
            # program behind that shell is looked for first, to be reported as not started
            if not is_shell_line(spec.argv):
                argv = [_resolve(spec.argv[0], spec.cwd, spec.env), *spec.argv[1:]]
            argv, stdin = cell.command(argv)
        proc = subprocess.Popen(
            argv,
            cwd=spec.cwd,
            env=spec.env,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            bufsize=0,
            **_as_user(spec.user),
        )
    except (OSError, ValueError) as exc:
        # ValueError: an argument or env value the OS cannot take (a NUL; text that is not
        # valid Unicode, from a job stored before validation refused it)
        if cell is not None:
            cell.kill()
        return RunResult("failed_to_start", error=f"could not start: {exc}")
    if cell is not None:
        cell.started(proc.pid)
    watch = _Watch(proc, output, cell)
    ended: Literal["exited", "timed_out", "stopped"] = "exited"
    stop_reason: str | None = None
    try:
        if on_start is not None:
            on_start(proc.pid)
        deadline = time.monotonic() + spec.timeout
        while True:
            watch.wait(min(poll_interval, deadline - time.monotonic()))
            if watch.exited:
                break
            if on_tick is not None:
                on_tick()
            stop_reason = should_stop()
            if stop_reason is not None:
                ended = "stopped"
                break
            if time.monotonic() >= deadline:
                ended = "timed_out"
                break
        if ended != "exited":
            _signal_group(proc.pid, signal.SIGTERM)
            if cell is not None:
                cell.signal(signal.SIGTERM)
            grace = kill_grace(stop_reason or ended) if callable(kill_grace) else kill_grace
            grace_end = time.monotonic() + grace
            while not watch.exited and time.monotonic() < grace_end:
                watch.wait(min(poll_interval, grace_end - time.monotonic()))
    finally:
        returncode = watch.finish()
    return RunResult(ended, returncode=returncode, stop_reason=stop_reason)
