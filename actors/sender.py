"""The callback sender: delivers the events of the outbox (service.outbox), at least once.

It runs in the worker role as a process of its own (`supervise`, a Dramatiq fork function,
restarts it when it dies), so that a slow or dead receiver, and the sender's own work, never
cost a job's claim or run anything: jobs only write an outbox row in the transaction that
ends them. `jobrunner dev` runs it as a thread (`Sender.start`).

- A poller thread reads the due events (one indexed read every POLL_S while idle, and after
  each delivery) and claims those whose destination has a free slot: at most
  JOBRUNNER_CALLBACK_CONCURRENCY deliveries at once per scheme://host:port, MAX_IN_FLIGHT in
  all. A receiver that answers slowly fills its own slots only.
- Each attempt checks the URL again, resolves its name and refuses it if any address is inside
  (service.destinations), then connects to the address it checked; POST, 10 s timeouts, no
  redirects, at most RESPONSE_LIMIT bytes of the answer read.
- 2xx: delivered. 410: stop. Refused: stop. Anything else: again after
  `callbacks.next_delay` (Retry-After honoured), until JOBRUNNER_CALLBACK_ATTEMPTS.
- The database away: the poller waits; a result waits in memory until it can be stored. A
  sender that dies mid-attempt leaves a claim that expires (`hold_s`): the event is sent again,
  with the same webhook-id. Redis is needed for nothing but metrics.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import structlog
from sqlalchemy.engine import Engine

from service import callbacks, outbox
from service.config import Settings
from service.db import utcnow
from service.destinations import Refused, Resolver, check_url, resolve, system_resolver
from service.errors import DatabaseUnavailable, JobRunnerError
from service.metrics import RECORDER

log = structlog.get_logger(__name__)

POLL_S = 0.5
MAX_IN_FLIGHT = 32
RESPONSE_LIMIT = 4096
#: how long a stored result may wait for the database before it retries, and between retries
RECORD_RETRY_S = 1.0


class Sender:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        resolver: Resolver = system_resolver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.resolver = resolver
        self.clock = clock
        self.allow = settings.callback_allow_list
        self.per_destination = settings.callback_concurrency
        #: an attempt's longest duration (name resolution, connect, send, answer), and more:
        #: the claim outlives it, so that only a dead sender's events come due again
        self.hold_s = settings.callback_timeout * 3 + 15
        self.tls = ssl.create_default_context()
        self.pool = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="jobrunner-callback")
        self.in_flight: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    # --- the poller -------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="jobrunner-sender", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self.stop_event.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def run(self) -> None:
        log.info("callback sender started", per_destination=self.per_destination)
        while not self.stop_event.is_set():
            try:
                claimed = self.poll()
            except (DatabaseUnavailable, JobRunnerError) as exc:
                log.warning("callback outbox unreadable; will retry", error=str(exc))
                self.stop_event.wait(RECORD_RETRY_S)
                continue
            if not claimed:
                self.wake.wait(POLL_S)
                self.wake.clear()

    def poll(self) -> int:
        """Claim and start the due events that have a free slot; return how many."""
        with self.lock:
            free = MAX_IN_FLIGHT - sum(self.in_flight.values())
            busy = {d for d, n in self.in_flight.items() if n >= self.per_destination}
        if free <= 0:
            return 0
        started = 0
        for item in outbox.due(self.engine, busy, limit=min(free, 100)):
            with self.lock:
                if self.in_flight[item.destination] >= self.per_destination:
                    continue
                if sum(self.in_flight.values()) >= MAX_IN_FLIGHT:
                    break
                self.in_flight[item.destination] += 1
            claimed = None
            try:
                claimed = outbox.claim(self.engine, item, self.hold_s)
            finally:
                if claimed is None:
                    self._release(item.destination)
            if claimed is not None:
                self.pool.submit(self._deliver, claimed)
                started += 1
        return started

    def _release(self, destination: str) -> None:
        with self.lock:
            self.in_flight[destination] -= 1
            if self.in_flight[destination] <= 0:
                del self.in_flight[destination]
        self.wake.set()

    # --- one attempt ------------------------------------------------------------------------

    def _deliver(self, claimed: outbox.Claimed) -> None:
        try:
            attempt, outcome = self.attempt(claimed)
            self._store(claimed, attempt)
            RECORDER.count("jobrunner_callback_deliveries", outcome)
            if outcome != "delivered":
                log.warning(
                    "callback attempt failed",
                    event_id=claimed.event_id,
                    job_id=claimed.job_id,
                    url=claimed.url,
                    attempt=claimed.attempt,
                    status_code=attempt.status_code,
                    error=attempt.error,
                    outcome=outcome,
                    retry_in_s=attempt.retry_in,
                )
        except Exception:
            log.exception("callback delivery crashed", event_id=claimed.event_id)
        finally:
            self._release(claimed.destination)

    def _store(self, claimed: outbox.Claimed, attempt: outbox.Attempt) -> None:
        """Store the result, waiting for the database if it is away (while it is, the event's
        claim may expire: it is then sent again, with the same webhook-id)."""
        while True:
            try:
                outbox.record(self.engine, claimed, attempt)
                return
            except (DatabaseUnavailable, JobRunnerError) as exc:
                if self.stop_event.is_set():
                    return
                log.warning("callback result not stored yet; will retry", error=str(exc))
                self.stop_event.wait(RECORD_RETRY_S)

    def attempt(self, claimed: outbox.Claimed) -> tuple[outbox.Attempt, str]:
        """POST the event once; how it went, and its outcome for the metrics."""
        retry_after: float | None = None
        try:
            status, retry_after = self._post(claimed)
            error = None
        except Refused as exc:
            return outbox.Attempt(None, str(exc), False, None), "refused"
        except httpx.TimeoutException:
            status, error = None, f"timed out after {self.settings.callback_timeout:g}s"
        except (httpx.HTTPError, OSError) as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"[:500]
        if status is not None and 200 <= status < 300:
            return outbox.Attempt(status, None, True, None), "delivered"
        if status == 410:
            return outbox.Attempt(status, None, False, None), "gone"
        if claimed.attempt >= self.settings.callback_attempts:
            return outbox.Attempt(status, error, False, None), "exhausted"
        delay = callbacks.next_delay(claimed.attempt, self.settings.callback_backoff, retry_after)
        return outbox.Attempt(status, error, False, delay), "retry"

    def _post(self, claimed: outbox.Claimed) -> tuple[int, float | None]:
        target = check_url(claimed.url, self.allow)  # the allow-list may have changed since
        address = resolve(target, self.allow, self.resolver)
        timestamp = int(self.clock())
        headers = callbacks.headers(
            self.settings.callback_secrets, claimed.event_id, timestamp, claimed.body
        )
        url = httpx.URL(claimed.url)
        headers["host"] = url.netloc.decode("ascii")
        extensions = {}
        if target.scheme == "https" and target.literal is None:
            extensions["sni_hostname"] = target.host  # the certificate is checked for the name
        timeout = httpx.Timeout(self.settings.callback_timeout)
        with (
            httpx.Client(
                verify=self.tls, timeout=timeout, follow_redirects=False, trust_env=False
            ) as client,
            client.stream(
                "POST",
                url.copy_with(host=address),
                content=claimed.body,
                headers=headers,
                extensions=extensions,
            ) as response,
        ):
            read = 0
            for chunk in response.iter_raw():
                read += len(chunk)
                if read >= RESPONSE_LIMIT:
                    break
            retry_after = callbacks.parse_retry_after(response.headers.get("retry-after"), utcnow())
            return response.status_code, retry_after


# --- the sender process of the worker role ------------------------------------------------


def main() -> None:
    """`python -m actors.sender`: the sender, until SIGTERM (or its supervisor's death)."""
    from service import logs
    from service.bus import Keys, RedisBus
    from service.db import create_engine
    from service.deployment import resolve_namespace
    from service.metrics import Flusher

    _die_with_parent()
    settings = Settings.from_environ()
    logs.configure(settings, process="sender")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request: ours say more
    engine = create_engine(settings.database_url, pool_size=4, max_overflow=MAX_IN_FLIGHT)
    while True:  # the namespace of the metrics comes from the database: wait for it
        try:
            settings = resolve_namespace(settings)
            break
        except Exception as exc:
            log.warning("waiting for the database", error=str(exc))
            time.sleep(1.0)
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    RECORDER.use_bus(RedisBus(client, settings.redis_url, Keys(settings.redis_namespace)))
    flusher = Flusher()
    flusher.start()
    sender = Sender(settings, engine)
    parent = os.getppid()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    sender.start()
    while not stopping.wait(1.0):
        if os.getppid() != parent:  # the supervisor is gone
            break
    sender.stop()
    flusher.stop()


def _die_with_parent() -> None:
    """Linux: SIGTERM when the supervisor dies, whatever kills it."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


RESTART_DELAY_S = 1.0


def supervise() -> int:
    """A Dramatiq fork function (`--fork-function actors.sender:supervise`): run the sender
    process, and start it again whenever it dies. SIGTERM (Dramatiq's stop, raised here as
    SystemExit) stops it."""
    proc: subprocess.Popen[bytes] | None = None
    try:
        while True:
            proc = subprocess.Popen([sys.executable, "-m", "actors.sender"])
            code = proc.wait()
            structlog.get_logger(__name__).warning(
                "callback sender exited; starting it again", code=code
            )
            time.sleep(RESTART_DELAY_S)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
