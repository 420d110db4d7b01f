"""The worker under contention: thousands of short jobs on a full worker, heartbeats at a high
rate, and a ledger of what each command really did compared with each job's final record.

What it catches: a transition write lost to a transient database error (a deadlock between
the heartbeat and a finishing UPDATE ended succeeded commands as `failed (worker lost)`), a
job run twice, a job never run. It needs contention to show: a quiet worker never deadlocks.
"""

from __future__ import annotations

import collections
import stat
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from service import jobs
from service.broker import make_broker
from service.config import Settings
from service.dispatch import dispatcher_for
from service.web.schemas import parse_create
from service.workers import NamedQueues
from tests.support import start_worker, wait_for

JOBS = 2000
QUEUE = "contention"
#: appends "<job id> <attempt> <exit status>" to $LEDGER, then exits with that status
LEDGER_SH = '#!/bin/sh\necho "$JOBRUNNER_JOB_ID $JOBRUNNER_ATTEMPT $1" >> "$LEDGER"\nexit "$1"\n'


def deadlocks(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        row = conn.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'").one()
    return int(row[1])


def exit_status_of(index: int) -> int:
    return 3 if index % 5 == 0 else 0  # a fifth of them fail


@pytest.fixture
def ledger_worker(base_env: dict[str, str], log_dir: Path, tmp_path: Path, clean_db: None):  # type: ignore[no-untyped-def]
    script = Path(base_env["JOB_HOME"]) / "bin" / "ledger.sh"
    script.write_text(LEDGER_SH)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    ledger = tmp_path / "ledger"
    ledger.touch()
    env = dict(
        base_env,
        # a namespace of its own: this worker's sweeper, not the shared worker's, runs here
        JOBRUNNER_REDIS_NAMESPACE=f"jrcontention-{uuid.uuid4().hex[:8]}",
        WORKER_PROCESSES="2",
        WORKER_THREADS="8",
        WORKER_QUEUES=QUEUE,
        JOBRUNNER_HEARTBEAT_INTERVAL="0.05",  # heartbeats at a high rate: 40 a second
        JOBRUNNER_LEASE_TIMEOUT="3",
        JOBRUNNER_SWEEP_INTERVAL="0.2",
        JOBRUNNER_PASS_ENV="LEDGER",
        LEDGER=str(ledger),
    )
    worker = start_worker(env, log_dir, "contention")
    yield env, ledger, worker
    worker.stop()


def test_every_record_matches_what_its_command_did(
    engine: sa.Engine, ledger_worker: tuple[dict[str, str], Path, object]
) -> None:
    env, ledger, worker = ledger_worker
    settings = Settings.from_environ(env)
    expected: dict[int, int] = {}
    broker = make_broker(settings)
    dispatcher = dispatcher_for(broker, settings, NamedQueues(engine, settings.lease_timeout))
    deadlocks_before = deadlocks(engine)
    try:
        for start in range(0, JOBS, 100):  # batches, as the web's submitter writes them
            statuses = [exit_status_of(i) for i in range(start, start + 100)]
            specs = [
                parse_create({"command": f"bin/ledger.sh {s}", "queue": QUEUE}, settings)
                for s in statuses
            ]
            created = jobs.create_many(engine, specs)
            expected.update((job.id, s) for job, s in zip(created, statuses, strict=True))
            assert dispatcher.wake(QUEUE)  # as the web does after each batch
    finally:
        broker.close()

    ids = sorted(expected)
    select = sa.text(
        "SELECT id, state, exit_code, last_error, attempts FROM jobs WHERE queue = :q"
    ).bindparams(q=QUEUE)

    def records() -> dict[int, sa.Row]:
        with engine.connect() as conn:
            return {row.id: row for row in conn.execute(select)}

    def all_final() -> bool:
        rows = records()
        return all(rows[i].state in ("succeeded", "failed", "cancelled") for i in ids)

    wait_for(all_final, timeout=180, interval=0.5, what=f"{JOBS} jobs to be final")
    rows = records()
    runs = collections.Counter()
    ran_with: dict[int, int] = {}
    for line in ledger.read_text().split("\n"):
        if line:
            job_id, _attempt, status = (int(x) for x in line.split())
            runs[job_id] += 1
            ran_with[job_id] = status

    mismatches = []
    for job_id in ids:
        row, status = rows[job_id], expected[job_id]
        want = (
            ("succeeded", 0, None) if status == 0 else ("failed", status, f"exit status {status}")
        )
        got = (row.state, row.exit_code, row.last_error)
        if runs[job_id] != 1 or got != want or row.attempts != 1:
            mismatches.append(
                f"job {job_id}: ran {runs[job_id]}x (status {ran_with.get(job_id)}), "
                f"record {got} attempts={row.attempts}, expected {want}"
            )
    found = deadlocks(engine) - deadlocks_before
    summary = f"{len(mismatches)} of {JOBS} records wrong; InnoDB deadlocks meanwhile: {found}"
    assert not mismatches, summary + "\n" + "\n".join(mismatches[:20])
    # no transaction locks rows in an order that can cross another's (service.jobs)
    assert found == 0, summary
    log = worker.output()  # type: ignore[attr-defined]
    assert "unhandled exception" not in log, summary
    assert "reason=lost" not in log, "an attempt was taken for lost while it finished"
