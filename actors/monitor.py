"""Per worker process: heartbeats for the running attempts, cancel notices, new queues."""

from __future__ import annotations

import socket
import threading
import time

import redis
import structlog

from actors import reaper
from actors.context import WorkerContext
from service import jobs
from service.bus import BusUnavailable
from service.errors import DatabaseUnavailable
from service.states import StopReason

log = structlog.get_logger(__name__)

#: how often each worker process looks for orphaned commands on its host (at most; and at
#: least 4 times per lease timeout, so an orphan dies before its job may run elsewhere)
REAP_INTERVAL_S = 5.0
#: how often each worker process looks for jobs claimed in its name that it does not run
#: (a claim whose answer was lost), and how old such a claim must be to count
RELEASE_INTERVAL_S = 10.0
RELEASE_AFTER_S = 10.0


class Monitor:
    """Background threads of one worker process.

    - heartbeat: stamps `heartbeat_at` of this process's running attempts (one query for all)
      and stops those that were cancelled, deleted or lost;
    - notices: stops a cancelled job at once, without waiting for the next heartbeat, and
      answers followers' requests for a running job's output;
    - self-fencing: a command whose heartbeats the database has not accepted for half the
      lease (this worker is cut off from it) is stopped, before the sweeper may give the job
      to another worker (actors/presence.py has the timing): never two runs at once;
    - the orphan reaper: kills commands left behind by dead worker processes on this host;
    - unknown claims: jobs claimed in this process's name that it does not run (a claim whose
      answer was lost) are put back in their queue at once, not failed as lost a lease later.
    """

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        try:
            self.reap_orphans()
        except Exception:  # best effort: the heartbeat thread reaps again every few seconds
            log.exception("reaping orphaned commands failed")
        for name, target in (
            ("jobrunner-heartbeat", self._heartbeat_loop),
            ("jobrunner-notices", self._notice_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=5)

    def beat(self) -> None:
        leases = self.ctx.running.leases()
        if not leases:
            return
        sent = time.monotonic()
        try:
            stops = jobs.heartbeat(self.ctx.engine, leases)
        except DatabaseUnavailable:
            self._fence_unconfirmed()
            raise
        self.ctx.running.confirm(leases, sent)
        for job_id, reason in stops.items():
            if self.ctx.running.request_stop(job_id, reason):
                log.info("stopping job", job_id=job_id, reason=reason)

    def _fence_unconfirmed(self) -> None:
        limit = self.ctx.fence_after
        for job_id in self.ctx.running.unconfirmed_since(time.monotonic() - limit):
            if self.ctx.running.request_stop(job_id, StopReason.LOST_CONTACT):
                log.warning(
                    "stopping job: the database has not seen it for too long",
                    job_id=job_id,
                    seconds=limit,
                )

    def release_unknown_claims(self) -> None:
        known = set(self.ctx.running.leases())
        engine, name = self.ctx.engine, self.ctx.name
        for job_id, queue in jobs.release_unregistered(engine, name, known, RELEASE_AFTER_S):
            log.warning(
                "put back a job claimed in this worker's name that it did not run",
                job_id=job_id,
                queue=queue,
            )
            self.ctx.dispatcher.wake(queue)

    def reap_orphans(self) -> None:
        for orphan in reaper.reap(socket.gethostname()):
            log.warning(
                "killed an orphaned command",
                job_id=orphan.job_id,
                pid=orphan.pid,
                dead_worker=orphan.worker,
            )

    def _heartbeat_loop(self) -> None:
        interval = self.ctx.settings.heartbeat_interval
        reap_every = min(REAP_INTERVAL_S, self.ctx.settings.lease_timeout / 4)
        next_reap = time.monotonic() + reap_every
        next_release = time.monotonic() + RELEASE_INTERVAL_S
        while not self.stop_event.wait(interval):
            try:
                self.beat()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + reap_every
                    self.reap_orphans()
                if time.monotonic() >= next_release:
                    next_release = time.monotonic() + RELEASE_INTERVAL_S
                    self.release_unknown_claims()
            except (DatabaseUnavailable, BusUnavailable, redis.RedisError) as exc:
                log.warning("heartbeat failed", error=str(exc))
            except Exception:
                log.exception("heartbeat failed")

    def _notice_loop(self) -> None:
        self.ctx.dispatcher.listen(self, self.stop_event)

    # --- NoticeHandler ------------------------------------------------------------------

    def on_cancel(self, job_id: int) -> None:
        if self.ctx.running.request_stop(job_id, StopReason.CANCELLED):
            log.info("stopping job", job_id=job_id, reason=StopReason.CANCELLED)

    def on_follow(self, job_id: int, offset: int) -> None:
        self.ctx.running.follow(job_id, offset)
