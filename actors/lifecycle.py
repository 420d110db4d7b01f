"""Dramatiq middleware that starts and stops the worker process's own machinery."""

from __future__ import annotations

import dramatiq
import structlog
from dramatiq.middleware import Middleware

from actors.context import WorkerContext
from actors.monitor import Monitor
from actors.presence import Presence
from actors.sweeper import Sweeper
from service import logs
from service.metrics import RECORDER, Flusher

log = structlog.get_logger(__name__)

#: the exit status of a worker process whose background work could not start
BOOT_FAILED = 5


class WorkerLifecycle(Middleware):
    """Starts the monitor and the sweeper with the worker; on shutdown, stops taking jobs
    and gives running ones `JOBRUNNER_SHUTDOWN_GRACE` seconds before they are handed back."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.monitor: Monitor | None = None
        self.sweeper: Sweeper | None = None
        self.metrics: Flusher | None = None
        self.presence: Presence | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Start the process's background work; if any of it fails, the process exits.

        Dramatiq logs an exception of this hook and goes on, which would leave a worker that
        runs jobs without heartbeats, self-fencing or a sweeper: jobs whose leases lapse while
        their commands still run. SystemExit is not an Exception: it ends the process (its
        exit makes `dramatiq` stop the others and exit too, for the supervisor to restart)."""
        try:
            self._boot(broker, worker)
        except Exception as exc:
            log.critical("worker process could not start; exiting", exc_info=True)
            raise SystemExit(BOOT_FAILED) from exc

    def _boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        for queue in sorted(worker.consumer_whitelist or ()):
            broker.declare_queue(queue)  # a consumer for each queue this worker serves by name
        served = tuple(sorted(worker.consumer_whitelist)) if worker.consumer_whitelist else None
        self.presence = Presence(self.ctx, served)
        self.presence.start()  # first: dead workers of this machine are released at once
        self.monitor = Monitor(self.ctx)
        self.monitor.start()
        self.sweeper = Sweeper(self.ctx)
        self.sweeper.start()
        RECORDER.use_bus(self.ctx.dispatcher.bus)
        self.metrics = Flusher()
        self.metrics.start()
        queues = sorted(worker.consumer_whitelist) if worker.consumer_whitelist else "all"
        for queue in served or ():
            self.ctx.dispatcher.notify(queue)  # its jobs may have waited for a worker like it
        log.info(
            "worker process ready",
            worker=self.ctx.name,
            queues=queues,
            containment=self.ctx.containment.mechanism,
        )

    # --- one slot per worker thread (actors.consumer.Slots) ----------------------------------

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.broker.MessageProxy,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        self._thread_done(broker)

    def after_skip_message(
        self, broker: dramatiq.Broker, message: dramatiq.broker.MessageProxy
    ) -> None:
        self._thread_done(broker)

    @staticmethod
    def _thread_done(broker: dramatiq.Broker) -> None:
        slots = getattr(broker, "slots", None)
        if slots is not None:
            slots.give()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        log.info(
            "worker process stopping",
            worker=self.ctx.name,
            running=len(self.ctx.running),
            grace=self.ctx.settings.shutdown_grace,
        )
        self.ctx.begin_shutdown()
        slots = getattr(broker, "slots", None)
        if slots is not None:
            slots.close()  # take no more wake-ups: idle workers elsewhere get them

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        books = self.ctx.bookkeeper
        log.info("worker process stopped", ends_recorded=books.ends, transactions=books.batches)
        if self.metrics is not None:
            self.metrics.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        if self.monitor is not None:
            self.monitor.stop()
        if self.presence is not None:
            self.presence.stop()  # deregistered at once: its attempts were handed back
        self.ctx.engine.dispose()
        logs.flush()  # Dramatiq closes this process's log pipe next
