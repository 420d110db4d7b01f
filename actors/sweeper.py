"""The sweeper: the database-driven part of scheduling, run by one worker process at a time.

Each tick it
- takes the due ticks of schedules (service.schedules: each creates at most one job, however
  many processes tick) and wakes their jobs' queues;
- queues the scheduled and retrying jobs whose time has come, and sends their messages;
- ends the attempts whose worker stopped sending heartbeats (`worker lost`; retried if the
  job allows it), but only once it has itself seen the database for a whole lease timeout:
  after an outage, live workers get the time to send heartbeats again first;
- wakes queues whose waiting jobs have no message (lost to a crash between commit and
  send, or to a broker outage), and releases held jobs of concurrency keys that have room
  (a safety net: the end of an attempt releases the next one itself);
- now and then deletes final jobs whose retention (by how they ended) is over, in small
  batches; a job kept 0 seconds was deleted as it ended (service.jobs).

It runs inside the worker role: one process at a time holds the sweeper lock (on the bus: a
Redis key with a time to live, renewed every tick), and any worker process takes over when the
holder dies.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import structlog

from actors.context import WorkerContext
from actors.execution import wake_key
from service import jobs, outbox, queries, schedules, workers
from service.bus import BusUnavailable
from service.db import transaction, utcnow
from service.dispatch import Dispatcher
from service.errors import DatabaseUnavailable
from service.metrics import RECORDER
from service.states import FINAL

log = structlog.get_logger(__name__)

#: a waiting job older than this with no message for its queue in the broker gets one
STUCK_AFTER_S = 5.0
#: how often old final jobs are purged, and how many batches at most per purge
RETENTION_INTERVAL_S = 60.0
RETENTION_BATCHES = 20


class Sweeper:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        interval = ctx.settings.sweep_interval
        bus = ctx.dispatcher.bus
        self.lock = bus.leader_lock(bus.keys.sweeper_lock, ttl=max(5.0, interval * 5))
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self._next_top_up = time.monotonic()
        #: since when this process has held the lock and seen the database without a break
        self.seen_database_since: float | None = None
        self._next_purge = time.monotonic()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="jobrunner-sweeper", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.lock.release()

    def _loop(self) -> None:
        while not self.stop_event.wait(self.ctx.settings.sweep_interval):
            try:
                if self.lock.hold():
                    if self.seen_database_since is None:
                        self.seen_database_since = time.monotonic()
                    self.tick()
                else:
                    self.seen_database_since = None
            except (DatabaseUnavailable, BusUnavailable) as exc:
                self.seen_database_since = None
                log.warning("sweep failed", error=str(exc))
            except Exception:
                self.seen_database_since = None
                log.exception("sweep failed")

    def tick(self) -> None:
        self.run_schedules()
        due = jobs.promote_due(self.ctx.engine)
        for job_id, queue in due:
            log.info("job due", job_id=job_id, queue=queue, state="queued")
        for queue in sorted({queue for _, queue in due}):
            self.ctx.dispatcher.wake(queue)
        self.find_lost()
        if time.monotonic() >= self._next_top_up:
            self._next_top_up = time.monotonic() + STUCK_AFTER_S
            self.top_up()
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + RETENTION_INTERVAL_S
            self.purge()

    def run_schedules(self) -> None:
        ticks = schedules.tick(self.ctx.engine)
        for taken in ticks:
            if taken.job is None:
                log.info(
                    "schedule tick skipped: its last job is not final",
                    schedule_id=taken.schedule_id,
                )
                RECORDER.count("jobrunner_schedule_ticks", "skipped")
                continue
            log.info(
                "schedule tick",
                schedule_id=taken.schedule_id,
                job_id=taken.job.id,
                queue=taken.job.queue,
                state=taken.job.state,
            )
            RECORDER.count("jobrunner_schedule_ticks", "created")
        for queue in sorted({t.job.queue for t in ticks if t.job is not None}):
            self.ctx.dispatcher.wake(queue)

    def find_lost(self) -> None:
        lease = self.ctx.settings.lease_timeout
        if self.seen_database_since is None or time.monotonic() - self.seen_database_since < lease:
            return
        policy = self.ctx.settings.retry_policy
        retention = self.ctx.settings.retention_policy
        every_job = self.ctx.settings.callback_url or None
        now, gone = workers.expired(self.ctx.engine, lease)
        for row in gone:
            lost = jobs.mark_worker_lost(
                self.ctx.engine, row.name, policy, self.known_end, retention, every_job
            )
            workers.remove_expired(self.ctx.engine, row)
            silent = (now - row.last_seen_at).total_seconds()
            RECORDER.observe("jobrunner_loss_detection_seconds", silent)
            log.warning(
                "worker lost: its presence expired",
                worker=row.name,
                silent_s=round(silent, 1),
                attempts=[item.job_id for item in lost],
            )
            self._count(lost)
        self._count(
            jobs.mark_lost(
                self.ctx.engine,
                lease,
                policy,
                known_end=self.known_end,
                retention=retention,
                callback_url=every_job,
            )
        )

    def _count(self, attempts: list[jobs.LostAttempt]) -> None:
        # a lost attempt freed a slot of its queue's cap or of its key: its queue may start
        # a waiting job now
        for queue in sorted({lost.queue for lost in attempts}):
            self.ctx.dispatcher.wake(queue)
        for key in sorted({lost.concurrency_key for lost in attempts if lost.concurrency_key}):
            wake_key(self.ctx, key, "")
        for lost in attempts:
            # a retrying one is queued by promote_due when its backoff is over
            known = lost.known
            log.warning(
                "worker lost" if known is None else "recorded the end its lost worker kept",
                job_id=lost.job_id,
                queue=lost.queue,
                worker=lost.worker,
                state=lost.state,
                **({} if known is None else {"exit_code": known.exit_code}),
            )
            RECORDER.count("jobrunner_attempts_lost", lost.queue)
            reason = known.reason if known is not None else "worker_lost"
            RECORDER.count("jobrunner_attempts_ended", lost.queue, reason)
            if lost.state in FINAL:
                RECORDER.count("jobrunner_jobs_finished", lost.queue, lost.state)

    def known_end(self, job_id: int, lease: int) -> jobs.KnownEnd | None:
        return known_end(self.ctx.dispatcher, job_id, lease)

    def purge(self) -> None:
        deleted = 0
        retention = self.ctx.settings.retention_policy
        for _ in range(RETENTION_BATCHES):
            batch = jobs.purge_finished(self.ctx.engine, retention)
            deleted += batch
            if batch == 0 or self.stop_event.wait(0.05):
                break
        # callback events done, and delivery records, are kept as long as the longest-kept jobs
        kept = max(retention.succeeded, retention.failed, retention.cancelled)
        for _ in range(RETENTION_BATCHES):
            if outbox.purge(self.ctx.engine, kept) == 0 or self.stop_event.wait(0.05):
                break
        if deleted:
            log.info(
                "purged old jobs",
                deleted=deleted,
                succeeded=retention.succeeded,
                failed=retention.failed,
                cancelled=retention.cancelled,
            )

    def top_up(self) -> None:
        """Wake the queues whose head job has waited too long with no wake-up pending (its
        message was lost to a crash between commit and send, or to a broker outage). One
        wake-up is enough: the thread that takes it wakes the next (service.dispatch). Run
        every STUCK_AFTER_S, so a queue whose threads are all busy gets at most one spare
        wake-up that often."""
        released = jobs.release_held(self.ctx.engine)
        if released:
            log.info("released held jobs of keys with room", jobs=released)
        stuck_before = utcnow() - dt.timedelta(seconds=STUCK_AFTER_S)
        with transaction(self.ctx.engine) as conn:
            stuck = queries.stuck_queues(conn, stuck_before)
        for queue in stuck:
            if not self.ctx.dispatcher.wake_pending(queue):
                log.info("waking a queue whose jobs wait", queue=queue)
                self.ctx.dispatcher.notify(queue)


def known_end(dispatcher: Dispatcher, job_id: int, lease: int) -> jobs.KnownEnd | None:
    """The end that the worker of this attempt kept on the bus, if it did (see execution)."""
    try:
        data = dispatcher.known_end(job_id, lease)
    except BusUnavailable:
        return None
    if data is None:
        return None
    try:
        return jobs.KnownEnd.decode(data)
    except (ValueError, TypeError) as exc:
        log.warning("unreadable attempt end ignored", job_id=job_id, error=str(exc))
        return None
