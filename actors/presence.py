"""A worker process's presence in the registry, the self-fence, and its watchdog.

The timing argument. L is the lease (JOBRUNNER_LEASE_TIMEOUT, 15 s by default), R the renewal
interval (JOBRUNNER_HEARTBEAT_INTERVAL, 2 s; at most L/4).

- Renewal: every R a thread that does nothing else updates this process's row of the
  registry (service.workers): `last_seen_at` = the database's clock. Call C the monotonic
  time at which it *sent* the last renewal that the database accepted; the row's
  `last_seen_at` was written after C.
- Declared lost: a sweeper (in any worker process, on any machine) ends this worker's attempts
  once `last_seen_at` is older than L by the database's clock; at the earliest C + L, in real
  time. The per-attempt heartbeats (actors/monitor.py) obey the same rule.
- Self-fence: when it has had no accepted renewal for F = L/2 (its own monotonic clock, from
  C), this process stops its commands: SIGTERM, then SIGKILL after G = min(kill grace, L/6).
  They are gone by C + L/2 + L/6 = C + 2L/3.
- Watchdog: a process of its own (actors/watchdog.py) gets C after every accepted renewal.
  When a worker cannot fence itself (frozen, stuck), the watchdog SIGKILLs its commands at
  C + W, W = 0.6 L: gone by about C + 0.6 L (plus one scan of /proc).
- So the commands of a worker that stopped renewing are gone by C + 2L/3, L/3 (5 s by default)
  before anyone may declare its attempts lost and run them again: never two runs at once.
- Clock skew between machines does not enter: the sweeper compares `last_seen_at` with the
  same database clock that wrote it, and each worker measures its deadlines with its own
  monotonic clock from C, a moment before the write. Only clock rates matter (parts per
  million over seconds). A database outage stops renewals and sweeps alike; after one, the
  sweeper waits a whole L of seeing the database before it declares anyone lost.
- Redis plays no part: an outage or a restart of Redis cannot make a live worker look dead.

Restarts: a worker process that starts on a machine (same boot and pid namespace) where the
registry holds another worker whose process is gone releases that worker's attempts at once
(its orphaned commands killed first), as it also does for a sibling that dies while it runs;
a graceful stop deregisters at once.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time

import structlog

from actors import containment, reaper
from actors.context import WorkerContext
from actors.sweeper import known_end
from service import jobs, workers
from service.errors import DatabaseUnavailable
from service.metrics import RECORDER
from service.states import FINAL, StopReason

log = structlog.get_logger(__name__)

#: the watchdog's deadline, as a share of the lease (see the module docstring; the self-fence's
#: shares are in actors.context)
WATCHDOG_SHARE = 0.6
#: how often the registry is read for dead workers of this machine
SIBLINGS_EVERY_S = 5.0


class Watchdog:
    """The worker's end of the pipe to its watchdog process."""

    def __init__(self, worker: str, deadline: float) -> None:
        self.worker, self.deadline = worker, deadline
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "actors.watchdog", self.worker, repr(self.deadline)],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a signal to the worker's process group spares it
            close_fds=True,
        )
        containment.exempt(self.proc.pid)  # a child of this process that no job started

    def beat(self, sent_at: float) -> None:
        self._say(f"beat {sent_at!r}\n".encode())

    def stop(self) -> None:
        """A graceful stop: the watchdog leaves the commands alone (none should be left)."""
        self._say(b"bye\n")
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def _say(self, line: bytes) -> None:
        if self.proc is None or self.proc.stdin is None:
            return
        if self.proc.poll() is not None:  # it died: start a new one
            log.warning("watchdog gone; starting another", code=self.proc.returncode)
            self.start()
            assert self.proc is not None and self.proc.stdin is not None
        try:
            os.write(self.proc.stdin.fileno(), line)
        except (BrokenPipeError, OSError) as exc:
            log.warning("watchdog unreachable", error=str(exc))


class Presence:
    """Registers this worker process, renews its presence from a thread of its own, fences
    its commands when the database stops confirming it, and feeds the watchdog."""

    def __init__(self, ctx: WorkerContext, queues: tuple[str, ...] | None) -> None:
        self.ctx = ctx
        self.identity = workers.this_process(ctx.name, queues, ctx.settings.machine_id)
        lease = ctx.settings.lease_timeout
        self.fence_after = ctx.fence_after
        self.watchdog = Watchdog(ctx.name, lease * WATCHDOG_SHARE)
        self.confirmed_at = time.monotonic()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self._next_siblings = 0.0

    def start(self) -> None:
        self.release_dead_siblings()
        workers.register(self.ctx.engine, self.identity)
        self.confirmed_at = time.monotonic()
        self.watchdog.start()
        self.watchdog.beat(self.confirmed_at)
        self.thread = threading.Thread(target=self._loop, name="jobrunner-presence", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """A graceful stop (after the running attempts were finished or handed back)."""
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        try:
            workers.deregister(self.ctx.engine, self.ctx.name)
        except DatabaseUnavailable:
            log.warning("could not deregister; the sweeper will see the presence expire")
        self.watchdog.stop()

    def _loop(self) -> None:
        interval = self.ctx.settings.heartbeat_interval
        while not self.stop_event.wait(interval):
            self.renew()
            if time.monotonic() >= self._next_siblings:
                self._next_siblings = time.monotonic() + SIBLINGS_EVERY_S
                try:
                    self.release_dead_siblings()
                except DatabaseUnavailable:
                    pass
                except Exception:
                    log.exception("could not look for dead workers of this machine")

    def renew(self) -> None:
        sent = time.monotonic()
        try:
            if not workers.renew(self.ctx.engine, self.ctx.name):
                # a sweeper declared this process lost (it was silent too long): its attempts
                # are gone already; be seen again
                log.warning("this worker was declared lost; registering again")
                workers.register(self.ctx.engine, self.identity)
            self.confirmed_at = sent
            self.watchdog.beat(sent)
        except DatabaseUnavailable as exc:
            log.warning("presence not renewed", error=str(exc))
        except Exception:
            log.exception("presence not renewed")
        if time.monotonic() - self.confirmed_at > self.fence_after:
            self.fence()

    def fence(self) -> None:
        """Stop every command of this process: the database has not seen it for too long."""
        for job_id in self.ctx.running.leases():
            if self.ctx.running.request_stop(job_id, StopReason.LOST_CONTACT):
                log.warning(
                    "stopping job: the database has not seen this worker for too long",
                    job_id=job_id,
                    seconds=round(time.monotonic() - self.confirmed_at, 1),
                )

    def release_dead_siblings(self) -> None:
        """Release the attempts of the workers of this machine whose process is gone."""
        for row in workers.on_machine(self.ctx.engine, self.identity.boot):
            if row.name == self.ctx.name or workers.is_alive(row):
                continue
            groups = reaper.kill_commands_of(row.name)
            lost = jobs.mark_worker_lost(
                self.ctx.engine,
                row.name,
                self.ctx.settings.retry_policy,
                known_end=functools.partial(known_end, self.ctx.dispatcher),
                retention=self.ctx.settings.retention_policy,
                callback_url=self.ctx.settings.callback_url or None,
            )
            workers.deregister(self.ctx.engine, row.name)
            log.warning(
                "released the attempts of a dead worker of this machine",
                worker=row.name,
                attempts=[item.job_id for item in lost],
                killed_groups=len(groups),
            )
            for item in lost:
                RECORDER.count("jobrunner_attempts_lost", item.queue)
                RECORDER.count("jobrunner_attempts_ended", item.queue, "worker_lost")
                if item.state in FINAL:
                    RECORDER.count("jobrunner_jobs_finished", item.queue, item.state)
