"""One attempt of a claimed job: build its command, run it, store its output and its end."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from actors import runner
from actors.context import WorkerContext
from actors.live import LivePublisher
from actors.output import OutputTail
from service import jobs, queries
from service.db import transaction
from service.errors import DatabaseUnavailable
from service.jobs import AttemptEnd, ClaimedJob, KnownEnd, NextClaim, Outcome, OutputSnapshot
from service.metrics import RECORDER
from service.policy import CommandNotAllowed
from service.states import FINAL, EndReason, State, StopReason

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: how often the output of a running command is written to the database
OUTPUT_FLUSH_INTERVAL_S = 1.0
#: how long to keep retrying the final write while the database is away
RECORD_RETRY_MAX_S = 24 * 3600.0
#: the longest pause between two tries of the final write (also at most a quarter of the
#: lease: once the database is back, the worker stores the end before the sweeper, which
#: waits a whole lease of seeing the database, may declare the attempt lost)
RECORD_RETRY_DELAY_MAX_S = 2.0


def job_environment(ctx: WorkerContext, job: ClaimedJob) -> dict[str, str]:
    """A clean environment: never the worker's own (it holds database and broker secrets)."""
    settings = ctx.settings
    home = str(settings.job_home)
    env = {
        "PATH": f"{home}/bin:{settings.job_path}",
        "HOME": ctx.job_user.home if ctx.job_user else os.environ.get("HOME", home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "JOB_HOME": home,
    }
    if ctx.job_user is not None:
        env["USER"] = env["LOGNAME"] = ctx.job_user.name
    for name in settings.pass_env:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(job.env or {})
    # set last: the orphan reaper finds a job's processes by these
    env["JOBRUNNER_JOB_ID"] = str(job.id)
    env["JOBRUNNER_ATTEMPT"] = str(job.attempt)
    env["JOBRUNNER_WORKER"] = ctx.name
    return env


def command_spec(ctx: WorkerContext, job: ClaimedJob) -> runner.CommandSpec:
    """The argv, folder and environment to run; CommandNotAllowed under a policy that refuses
    it (a job stored before the policy was set, say). Under a policy a shell line, which can
    only be a program and plain arguments, runs without a shell: no builtin, no expansion."""
    policy = ctx.settings.command_policy
    policy.check(job.command, job.argv, job.env)
    if job.argv:
        argv = list(job.argv)
    elif policy.active:
        argv = shlex.split(job.command)
    else:
        argv = ["/bin/sh", "-c", job.command]
    return runner.CommandSpec(
        argv=argv,
        cwd=ctx.settings.job_home,
        env=job_environment(ctx, job),
        timeout=job.timeout,
        user=ctx.job_user,
    )


def outcome_of(result: runner.RunResult, job: ClaimedJob) -> Outcome:
    """What the job's record says about an attempt that ended this way."""
    if result.ended == "failed_to_start":
        # an OSError's text may carry undecodable bytes of a path (surrogates): make it storable
        error = (result.error or "could not start").encode("utf-8", "backslashreplace").decode()
        return Outcome(succeeded=False, error=error, reason=EndReason.NOT_STARTED)
    if result.ended == "timed_out":
        error = f"timed out after {job.timeout}s"
        return Outcome(succeeded=False, error=error, reason=EndReason.TIMEOUT)
    if result.ended == "stopped":
        if result.stop_reason == StopReason.LOST_CONTACT:
            error = "worker lost contact with the database"
            return Outcome(succeeded=False, error=error, reason=EndReason.WORKER_LOST)
        return Outcome(
            succeeded=False, cancelled=True, error="cancelled", reason=EndReason.CANCELLED
        )
    code = result.returncode
    assert code is not None
    if code == 0:
        return Outcome(succeeded=True, exit_code=0)
    if code < 0:
        error = f"killed by signal {-code}"
        return Outcome(succeeded=False, error=error, reason=EndReason.SIGNAL, signal=-code)
    return Outcome(succeeded=False, exit_code=code, error=f"exit status {code}")


class _OutputFlusher:
    """Writes the output of a running attempt to the database now and then."""

    def __init__(self, ctx: WorkerContext, job: ClaimedJob, tail: OutputTail) -> None:
        self.ctx, self.job, self.tail = ctx, job, tail
        self.saved_version = tail.version
        self.next_flush = time.monotonic() + OUTPUT_FLUSH_INTERVAL_S

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self.next_flush or self.tail.version == self.saved_version:
            return
        self.next_flush = now + OUTPUT_FLUSH_INTERVAL_S
        version = self.tail.version
        try:
            still_ours = jobs.save_output(self.ctx.engine, self.job, self.tail.snapshot())
        except DatabaseUnavailable:
            return  # the final write will carry it
        self.saved_version = version
        if not still_ours:
            self.ctx.running.request_stop(self.job.id, StopReason.LOST)


def _record(
    ctx: WorkerContext,
    job: ClaimedJob,
    what: str,
    write: Callable[[], T],
    known: KnownEnd | None = None,
) -> T:
    """Run one of an attempt's final writes until the database has stored it.

    A lock conflict is run again inside the write (`jobs.retry_conflicts`); an outage is
    waited out here, with short pauses, while the attempt stays registered (so that its
    heartbeats go on whenever the database answers). From the first failure on, the end
    (`known`) is also kept in the broker: if this process dies, or the sweeper declares the
    attempt lost first, the sweeper records the end as it happened, not as `worker lost`.
    """
    delay, give_up = 0.05, time.monotonic() + RECORD_RETRY_MAX_S
    longest = min(RECORD_RETRY_DELAY_MAX_S, ctx.settings.lease_timeout / 4)
    kept = False
    while True:
        try:
            result = write()
        except DatabaseUnavailable:
            if known is not None and not kept:
                kept = ctx.dispatcher.keep_end(
                    job.id, job.lease, known.encode(), RECORD_RETRY_MAX_S
                )
            if time.monotonic() >= give_up:
                raise
            log.warning("database unavailable; will retry", job_id=job.id, write=what)
            time.sleep(delay)
            delay = min(delay * 2, longest)
            continue
        if kept:
            ctx.dispatcher.forget_end(job.id, job.lease)
        return result


#: asked when an attempt's end is recorded: the queue to claim the next job from in the same
#: transaction, or None (the thread's turn is over, or the worker is stopping)
KeepGoing = Callable[[], NextClaim | None]


@dataclass(frozen=True)
class Next:
    """What a thread that keeps its queue learns from an attempt's end: whether the next claim
    was made with the record (`tried`), and the job it claimed, if any."""

    tried: bool = False
    job: ClaimedJob | None = None


def wake_key(ctx: WorkerContext, key: str | None, own_queue: str) -> None:
    """An attempt of `key` has ended, and the next job of the key was released (service.jobs):
    wake its queue, when it is another than this thread's own (which it claims from next)."""
    if key is None:
        return
    try:
        with transaction(ctx.engine) as conn:
            queues = queries.ready_queues_of_key(conn, key)
    except DatabaseUnavailable:
        return  # the sweeper wakes queues whose jobs wait
    for queue in queues:
        if queue != own_queue:
            ctx.dispatcher.wake(queue)


def execute(ctx: WorkerContext, job: ClaimedJob, keep: KeepGoing | None = None) -> Next:
    """Run one attempt of a job this worker has claimed, and record how it ended; with `keep`,
    claim the next job of its queue in the same transaction as the record (see Next).

    The attempt stays registered (and heartbeated) until its end is recorded, so a result
    waiting for the database to come back is not taken for a lost worker.
    """
    live = LivePublisher(ctx.dispatcher, job.id)
    ctx.running.add(job, live)
    try:
        return _execute(ctx, job, live, keep)
    finally:
        ctx.running.remove(job.id)


def _run(
    ctx: WorkerContext,
    job: ClaimedJob,
    spec: runner.CommandSpec,
    tail: OutputTail,
    live: LivePublisher,
) -> runner.RunResult:
    save_output = _OutputFlusher(ctx, job, tail)

    def tick() -> None:
        live.flush()
        save_output()

    return runner.run(
        spec,
        tail,
        should_stop=lambda: ctx.stop_reason(job.id),
        kill_grace=ctx.kill_grace,
        on_tick=tick,
        cell=ctx.containment.cell(str(job.id)),
    )


def _execute(
    ctx: WorkerContext, job: ClaimedJob, live: LivePublisher, keep: KeepGoing | None
) -> Next:
    settings = ctx.settings
    initial = OutputSnapshot(job.output, job.output_offset) if job.attempt > 1 else None
    tail = OutputTail(settings.output_limit, initial, listener=live.on_chunk)
    live.tail = tail
    if job.attempt > 1:
        tail.write(f"\n--- jobrunner: attempt {job.attempt} ---\n".encode())
    fields = {"job_id": job.id, "queue": job.queue, "attempt": job.attempt}
    log.info("job started", **fields, state="running", worker=ctx.name)
    RECORDER.count("jobrunner_jobs_started", job.queue)
    pickup = (job.claimed_at - job.run_at).total_seconds()
    RECORDER.observe("jobrunner_pickup_latency_seconds", max(0.0, pickup), job.queue)
    started = time.monotonic()
    try:
        result = _run(ctx, job, command_spec(ctx, job), tail, live)
    except CommandNotAllowed as exc:
        result = runner.RunResult("failed_to_start", error=f"could not start: {exc.message}")
    duration = round(time.monotonic() - started, 3)
    ctx.running.mark_finishing(job.id)
    if result.ended == "stopped" and result.stop_reason == StopReason.LOST:
        log.warning("job attempt taken over; nothing recorded", **fields, duration=duration)
        return Next()
    if result.ended == "stopped" and result.stop_reason == StopReason.SHUTDOWN:
        if _record(ctx, job, "hand back", lambda: jobs.hand_back(ctx.engine, job)):
            live.end("queued")
            ctx.dispatcher.wake(job.queue)
            wake_key(ctx, job.concurrency_key, job.queue)
        log.info("job handed back", **fields, state="queued", duration=duration)
        return Next()
    outcome = outcome_of(result, job)
    output = tail.snapshot()
    tries = 0

    def record() -> tuple[State | None, Next]:
        nonlocal tries
        tries += 1
        if tries > 1:
            # the next claim rides along on the first try only: a try that failed may have
            # committed (a connection lost during COMMIT), and a second claim would strand the
            # first; a retry is alone too, and runs again on a dropped connection
            return ctx.bookkeeper.record_alone(AttemptEnd(job, outcome, output)), Next()
        then = keep() if keep is not None else None
        state, claimed = ctx.bookkeeper.record(AttemptEnd(job, outcome, output, then))
        return state, Next(tried=then is not None, job=claimed)

    state, after = _record(ctx, job, "finish", record, known=KnownEnd(outcome, output))
    if state is not None:
        wake_key(ctx, job.concurrency_key, job.queue)
        # as _end_attempt stores it: a cancelled job's last error is `cancelled`
        error = "cancelled" if state == State.CANCELLED else outcome.error
        live.end(state, outcome.exit_code, error)
        RECORDER.count("jobrunner_attempts_ended", job.queue, outcome.reason)
        RECORDER.observe("jobrunner_run_duration_seconds", duration, job.queue, state)
        if state in FINAL:
            RECORDER.count("jobrunner_jobs_finished", job.queue, state)
    log.info(
        "job finished",
        **fields,
        state=state or "superseded",
        exit_code=outcome.exit_code,
        error=outcome.error,
        duration=duration,
    )
    return after
