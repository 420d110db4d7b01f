"""Per worker process: heartbeats for the running attempts, cancel notices, new queues."""

from __future__ import annotations

import threading

import dramatiq
import redis
import structlog

from actors.context import WorkerContext
from service import jobs, queries
from service.db import transaction
from service.errors import DatabaseUnavailable

log = structlog.get_logger(__name__)


class Monitor:
    """Background threads of one worker process.

    - heartbeat: stamps `heartbeat_at` of this process's running attempts (one query for all)
      and stops those that were cancelled, deleted or lost;
    - notices: stops a cancelled job at once, without waiting for the next heartbeat, and
      (when the worker serves every queue) starts consuming a queue as soon as it is created;
    - queue discovery: the same for queues whose notice was missed, at each heartbeat.
    """

    def __init__(self, ctx: WorkerContext, broker: dramatiq.Broker, serve_all_queues: bool):
        self.ctx = ctx
        self.broker = broker
        self.serve_all_queues = serve_all_queues
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        if self.serve_all_queues:
            self.discover_queues(from_database=True)
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
        for job_id, reason in jobs.heartbeat(self.ctx.engine, leases).items():
            if self.ctx.running.request_stop(job_id, reason):
                log.info("stopping job", job_id=job_id, reason=reason)

    def discover_queues(self, *, from_database: bool = False) -> None:
        names = self.ctx.dispatcher.known_queues()
        if from_database:
            with transaction(self.ctx.engine) as conn:
                names |= set(queries.waiting_queues(conn))
        for name in sorted(names - self.broker.get_declared_queues()):
            self.broker.declare_queue(name)

    def _heartbeat_loop(self) -> None:
        interval = self.ctx.settings.heartbeat_interval
        while not self.stop_event.wait(interval):
            try:
                self.beat()
                if self.serve_all_queues:
                    self.discover_queues()
            except (DatabaseUnavailable, redis.RedisError) as exc:
                log.warning("heartbeat failed", error=str(exc))
            except Exception:
                log.exception("heartbeat failed")

    def _notice_loop(self) -> None:
        def on_cancel(job_id: int) -> None:
            if self.ctx.running.request_stop(job_id, "cancelled"):
                log.info("stopping job", job_id=job_id, reason="cancelled")

        def on_queue(name: str) -> None:
            if self.serve_all_queues and name not in self.broker.get_declared_queues():
                self.broker.declare_queue(name)

        self.ctx.dispatcher.listen(on_cancel, on_queue, self.stop_event)
