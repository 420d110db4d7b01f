"""Prometheus metrics (`GET /metrics`), right with any number of web and worker processes.

Two sources, chosen per metric:

- Events (jobs created, started, finished; pickup latency and run duration; HTTP requests) are
  counted by the process where they happen, in memory, and added every second into one hash
  on the bus (service.bus: Redis, shared by all processes and machines; in process with the
  embedded broker). Any web process serves the totals. They survive process restarts; a Redis
  restart resets them, which Prometheus' `rate()` takes as a counter reset.
- State (queue depth, oldest waiting job, running jobs) is read from the database at scrape
  time: it is the truth, whoever changed it.

prometheus-client renders both (custom collector; the exposition format is its own). Workers
only count, and never import it.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from service import concurrency, queries, workers
from service.bus import Bus, BusUnavailable
from service.db import jobs, transaction, utcnow
from service.states import State

if TYPE_CHECKING:  # workers only count: the exposition library is for the web's scrapes
    from prometheus_client.core import Metric

log = structlog.get_logger(__name__)

FLUSH_INTERVAL_S = 1.0
PICKUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400)
LOSS_BUCKETS = (1, 2.5, 5, 10, 15, 20, 30, 60, 120, 300)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

#: name -> (help, label names, buckets or None for a counter)
EVENTS: Mapping[str, tuple[str, tuple[str, ...], tuple[float, ...] | None]] = {
    "jobrunner_jobs_created": ("Jobs created", ("queue",), None),
    "jobrunner_jobs_started": ("Attempts started", ("queue",), None),
    "jobrunner_jobs_finished": ("Jobs that reached a final state", ("queue", "state"), None),
    "jobrunner_pickup_latency_seconds": (
        "From a job's run_at (its creation, or the end of its backoff) to its attempt's start",
        ("queue",),
        PICKUP_BUCKETS,
    ),
    "jobrunner_run_duration_seconds": (
        "How long attempts ran",
        ("queue", "state"),
        DURATION_BUCKETS,
    ),
    "jobrunner_attempts_ended": (
        "Attempts that ended, by how (end_reason)",
        ("queue", "end_reason"),
        None,
    ),
    "jobrunner_attempts_lost": (
        "Attempts declared lost: their worker died or went silent",
        ("queue",),
        None,
    ),
    "jobrunner_loss_detection_seconds": (
        "From a lost worker's last sign of life to its attempts declared lost",
        (),
        LOSS_BUCKETS,
    ),
    "jobrunner_schedule_ticks": (
        "Schedule ticks taken, by outcome (created a job, or skipped: overlap)",
        ("outcome",),
        None,
    ),
    "jobrunner_callback_deliveries": (
        "Callback delivery attempts, by outcome: delivered, retry (failed, to be sent again), "
        "gone (410), exhausted (the last attempt failed), refused (the address is not allowed)",
        ("outcome",),
        None,
    ),
    "jobrunner_http_requests": ("HTTP requests", ("route", "method", "status"), None),
    "jobrunner_http_request_duration_seconds": (
        "HTTP request latency",
        ("route", "method"),
        HTTP_BUCKETS,
    ),
}


@functools.cache
def _key(name: str, labels: tuple[str, ...], bucket: str = "") -> str:
    """The store's field of a counter, or of one histogram bucket (not cumulative)."""
    return json.dumps([name, list(labels), bucket], separators=(",", ":"))


@functools.cache
def _bounds(name: str) -> tuple[tuple[float, ...], tuple[str, ...]]:
    buckets = EVENTS[name][2] or ()
    return buckets, (*(repr(float(b)) for b in buckets), "+Inf")


class Recorder:
    """Counts events in memory; `flush()` adds them to the bus's shared counts."""

    def __init__(self) -> None:
        self._pending: defaultdict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        self.bus: Bus | None = None  # until the process's bus is known: counts stay here

    def use_bus(self, bus: Bus) -> None:
        self.bus = bus

    def count(self, name: str, *labels: str, amount: float = 1) -> None:
        key = _key(name, labels)
        with self._lock:
            self._pending[key] += amount

    def observe(self, name: str, value: float, *labels: str) -> None:
        buckets, names = _bounds(name)
        bucket = _key(name, labels, names[bisect.bisect_left(buckets, value)])
        total = _key(name, labels, "sum")
        with self._lock:
            self._pending[bucket] += 1
            self._pending[total] += value

    def flush(self) -> None:
        if self.bus is None:
            return
        with self._lock:
            pending, self._pending = self._pending, defaultdict(float)
        if not pending:
            return
        try:
            self.bus.add_counts(self.bus.keys.metrics, dict(pending))
        except BusUnavailable as exc:
            with self._lock:  # keep them for the next flush
                for field, amount in pending.items():
                    self._pending[field] += amount
            log.warning("metrics not flushed; will retry", error=str(exc))

    def totals(self) -> dict[str, float]:
        """Everything counted by every process, as flushed so far."""
        if self.bus is None:
            with self._lock:
                return dict(self._pending)
        self.flush()
        return self.bus.counts(self.bus.keys.metrics)


#: the recorder of this process (a web or a worker process)
RECORDER = Recorder()


class Flusher:
    """A thread flushing the recorder every second."""

    def __init__(self, recorder: Recorder = RECORDER) -> None:
        self.recorder = recorder
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="jobrunner-metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)
        self.recorder.flush()

    def _run(self) -> None:
        while not self.stop_event.wait(FLUSH_INTERVAL_S):
            self.recorder.flush()


# --- scraping ------------------------------------------------------------------------------


def _event_metrics(totals: Mapping[str, float]) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    counters: defaultdict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
    histograms: defaultdict[str, defaultdict[tuple[str, ...], dict[str, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for field, value in totals.items():
        try:
            name, labels, bucket = json.loads(field)
        except ValueError:
            continue
        if name not in EVENTS:
            continue
        if EVENTS[name][2] is None:
            counters[name][tuple(labels)] = value
        else:
            histograms[name][tuple(labels)][bucket] = value
    for name, (help_text, label_names, buckets) in EVENTS.items():
        if buckets is None:
            counter = CounterMetricFamily(name, help_text, labels=label_names)
            for labels, value in sorted(counters[name].items()):
                counter.add_metric(list(labels), value)
            yield counter
        else:
            histogram = HistogramMetricFamily(name, help_text, labels=label_names)
            bucket_names = _bounds(name)[1]
            for labels, values in sorted(histograms[name].items()):
                cumulative = list(itertools.accumulate(values.get(b, 0.0) for b in bucket_names))
                points = list(zip(bucket_names, cumulative, strict=True))
                histogram.add_metric(list(labels), points, sum_value=values.get("sum", 0.0))
            yield histogram


WAITING_STATES = (State.QUEUED, State.SCHEDULED, State.RETRYING, State.RUNNING)


def _state_metrics(engine: Engine) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    with transaction(engine) as conn:
        rows = conn.execute(
            sa.select(jobs.c.queue, jobs.c.state, sa.func.count(), sa.func.min(jobs.c.run_at))
            .where(jobs.c.state.in_(WAITING_STATES))
            .group_by(jobs.c.queue, jobs.c.state)
        ).all()
    now = utcnow()
    jobs_by_state = GaugeMetricFamily(
        "jobrunner_jobs", "Jobs that are not final, by state", labels=("queue", "state")
    )
    depth = GaugeMetricFamily(
        "jobrunner_queue_depth", "Jobs waiting for a worker", labels=("queue",)
    )
    oldest = GaugeMetricFamily(
        "jobrunner_oldest_waiting_seconds",
        "How long the oldest job waiting for a worker has waited",
        labels=("queue",),
    )
    running = GaugeMetricFamily("jobrunner_jobs_running", "Attempts running", labels=("queue",))
    for queue, state, count, first_run_at in rows:
        jobs_by_state.add_metric([queue, state], count)
        if state == State.QUEUED:
            depth.add_metric([queue], count)
            oldest.add_metric([queue], max(0.0, (now - first_run_at).total_seconds()))
        elif state == State.RUNNING:
            running.add_metric([queue], count)
    yield from (jobs_by_state, depth, oldest, running)
    yield from _outbox_metrics(engine)


def _outbox_metrics(engine: Engine) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    with transaction(engine) as conn:
        stats = queries.outbox_stats(conn, utcnow())
    pending = GaugeMetricFamily(
        "jobrunner_callback_outbox_pending", "Callback events not delivered yet (nor given up)"
    )
    pending.add_metric([], stats.pending)
    oldest = GaugeMetricFamily(
        "jobrunner_callback_outbox_oldest_pending_seconds",
        "How long the oldest callback event not delivered yet has waited (0: none)",
    )
    oldest.add_metric([], stats.oldest_pending_seconds or 0.0)
    yield from (pending, oldest)


#: at most this many concurrency keys get series of their own; the rest add up under `_other`
MAX_KEY_SERIES = 50
OTHER_KEYS = "_other"


def _key_metrics(engine: Engine) -> Iterator[Metric]:
    """Running jobs per concurrency key, only for keys with running jobs at scrape time (a
    key that has nothing running has no series), and at most MAX_KEY_SERIES of them: the
    label's cardinality is bounded by what runs at once, and by that cap."""
    from prometheus_client.core import GaugeMetricFamily

    with transaction(engine) as conn:
        in_use = concurrency.in_use(conn)
    gauge = GaugeMetricFamily(
        "jobrunner_concurrency_key_running",
        f"Running jobs of each concurrency key in use (the {MAX_KEY_SERIES} busiest; the rest "
        f"as {OTHER_KEYS})",
        labels=("key",),
    )
    ranked = sorted(in_use.items(), key=lambda item: (-item[1], item[0]))
    for key, count in ranked[:MAX_KEY_SERIES]:
        gauge.add_metric([key], count)
    rest = sum(count for _, count in ranked[MAX_KEY_SERIES:])
    if rest:
        gauge.add_metric([OTHER_KEYS], rest)
    yield gauge


def _worker_metrics(engine: Engine, lease: float) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    live = GaugeMetricFamily("jobrunner_workers", "Worker processes alive (seen within a lease)")
    live.add_metric([], workers.count_live(engine, lease))
    yield live


class JobRunnerCollector:
    """prometheus-client collector: events from the shared store, state from the database."""

    def __init__(self, engine: Engine, lease: float, recorder: Recorder = RECORDER) -> None:
        self.engine = engine
        self.lease = lease
        self.recorder = recorder

    def collect(self) -> Iterator[Metric]:
        yield from _event_metrics(self.recorder.totals())
        yield from _state_metrics(self.engine)
        yield from _key_metrics(self.engine)
        yield from _worker_metrics(self.engine, self.lease)

    def describe(self) -> list[Any]:
        return []  # collected at scrape time only
