"""No process a job starts outlives its job, however it detaches (actors/containment.py).

Two escapes, with SIGTERM ignored and no marker variable (`env -i`): `setsid` (a new session)
and a daemon's double fork with a process group of its own. Each on the three ways an attempt
ends (a timeout, a cancel, the command's own exit), under both mechanisms (a job cgroup, the
worker as child subreaper), through a real worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Api, Process, start_worker, wait_for

SETSID = (
    "env -i /usr/bin/setsid /bin/sh -c 'trap \"\" TERM; echo $$ > {pidfile}; exec sleep 300' "
    "</dev/null >/dev/null 2>&1 &"
)
DOUBLE_FORK = (
    'env -i /usr/bin/python3 -c "import os, signal\n'
    "if os.fork(): os._exit(0)\n"
    "os.setpgrp()\n"
    "if os.fork(): os._exit(0)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open('{pidfile}', 'w').write(str(os.getpid()))\n"
    "os.execv('/bin/sleep', ['sleep', '300'])\" </dev/null >/dev/null 2>&1 &"
)
ESCAPES = {"setsid": SETSID, "double-fork": DOUBLE_FORK}
#: after the escape is out: how the command itself goes on
ENDS = {"timeout": "sleep 60", "cancel": "sleep 60", "exit": "exit 0"}


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(params=["cgroup", "subreaper"])
def contained(
    request: pytest.FixtureRequest, base_env: dict[str, str], log_dir: Path
) -> Iterator[tuple[str, str, Process]]:
    mode = request.param
    queue = f"contain-{mode}"
    worker = start_worker(
        dict(base_env, JOBRUNNER_CONTAINMENT=mode, WORKER_QUEUES=queue, WORKER_THREADS="6"),
        log_dir,
        f"containment-{mode}",
    )
    yield mode, queue, worker
    worker.stop()


def test_nothing_a_job_starts_outlives_it(
    contained: tuple[str, str, Process], api: Api, tmp_path: Path
) -> None:
    mode, queue, worker = contained
    assert f"containment={mode}" in worker.output()
    jobs: dict[tuple[str, str], tuple[int, Path]] = {}
    for escape, template in ESCAPES.items():
        for end, rest in ENDS.items():
            pidfile = tmp_path / f"{escape}-{end}-{uuid.uuid4().hex[:6]}"
            command = (
                f"{template.format(pidfile=pidfile)}\n"
                f"while [ ! -s {pidfile} ]; do sleep 0.02; done\n{rest}"
            )
            timeout = 3 if end == "timeout" else 60
            job = api.submit(command=command, queue=queue, timeout=timeout)
            jobs[escape, end] = job["id"], pidfile
    escapees = {}
    for key, (_, pidfile) in jobs.items():
        wait_for(lambda p=pidfile: p.exists() and p.read_text().strip(), timeout=30, what=key)
        escapees[key] = int(pidfile.read_text())
        if key[1] != "exit":  # (that one's job may be over already)
            assert alive(escapees[key]), key  # out of the job's group and session, running
    for (_escape, end), (job_id, _) in jobs.items():
        if end == "cancel":
            assert api.http.post(f"/jobs/{job_id}/cancel").status_code == 202
    expected = {"timeout": "failed", "cancel": "cancelled", "exit": "succeeded"}
    for (escape, end), (job_id, _) in jobs.items():
        job = api.wait(job_id, timeout=30)
        assert job["state"] == expected[end], (escape, end, job)
    for key, pid in escapees.items():
        # the attempt's end killed it: gone by the time the job is final, give or take a reap
        wait_for(lambda pid=pid: not alive(pid), timeout=5, what=f"the {key} escapee gone")
