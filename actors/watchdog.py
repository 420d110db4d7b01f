"""The watchdog of one worker process: it kills the worker's commands when the worker cannot.

A worker process that is frozen (SIGSTOP, a machine suspended, stuck in a long pause) cannot
stop its own commands before its lease runs out, and then its jobs may run elsewhere while
its commands still run. This process watches it from outside: the worker's presence thread
writes `beat <T>` after each renewal the database accepted (T: the monotonic time at which it
sent it; CLOCK_MONOTONIC is the same clock in every process of a machine). When no beat has
come for `deadline` seconds after the last T, the watchdog SIGKILLs the process group of every
command that carries the worker's name (JOBRUNNER_WORKER), then waits for the worker to beat
again. When the worker dies, its end of the pipe closes: the watchdog kills its commands at
once and exits. `bye` is a worker's graceful stop.

Standard library only (and the reaper, which is too): it runs as `python -I -m actors.watchdog
NAME DEADLINE`, in a session of its own, so that stopping the worker's process group does not
stop it. See actors/presence.py for the timing.
"""

from __future__ import annotations

import os
import select
import sys
import time

from actors import reaper


def log(event: str, **fields: object) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    extra = "".join(f" {name}={value}" for name, value in fields.items())
    sys.stderr.write(f'timestamp={stamp} level=warning event="{event}"{extra} process=watchdog\n')
    sys.stderr.flush()


def watch(worker: str, deadline: float, fd: int) -> None:
    last = time.monotonic()
    armed = True
    pending = b""
    while True:
        timeout = max(0.0, last + deadline - time.monotonic()) if armed else None
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:  # the worker has not renewed its presence in time
            groups = reaper.kill_commands_of(worker)
            log("worker silent: killed its commands", worker=worker, groups=len(groups))
            armed = False  # until it beats again
            continue
        chunk = os.read(fd, 4096)
        if not chunk:  # the worker is gone
            groups = reaper.kill_commands_of(worker)
            if groups:
                log("worker gone: killed its commands", worker=worker, groups=len(groups))
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if line == b"bye":
                return
            if line.startswith(b"beat "):
                last, armed = float(line[5:]), True


def main() -> None:
    worker, deadline = sys.argv[1], float(sys.argv[2])
    try:
        watch(worker, deadline, sys.stdin.fileno())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
