"""Jobs run as JOBRUNNER_JOB_USER: they cannot read the secrets of the worker that started them
(/proc/<pid>/environ), nor write the scripts of JOB_HOME/bin; and a worker that could not
switch users refuses to start."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import JOBRUNNER, Api, Process, start_worker, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

JOB_USER = "nobody"
PROBE = """\
echo "user=$(id -un) uid=$(id -u) groups=$(id -G) home=$HOME"
leaks=0
for f in /proc/[0-9]*/environ; do
  if grep -qa -e DATABASE_URL -e JOBRUNNER_API_TOKENS "$f" 2>/dev/null; then leaks=$((leaks+1)); fi
done
echo "readable environs with secrets: $leaks"
try() { if eval "$2" 2>/dev/null; then echo "$1: done"; else echo "$1: refused"; fi; }
try "worker environ" 'cat /proc/$PPID/environ >/dev/null'
try bin 'touch "$JOB_HOME/bin/planted"'
try script 'echo x >> "$JOB_HOME/bin/tool.sh"'
env -i /usr/bin/setsid /bin/sh -c 'echo $$ > PIDFILE; exec sleep 300' </dev/null >/dev/null 2>&1 &
while [ ! -s PIDFILE ]; do sleep 0.02; done
"""


@pytest.fixture
def user_job_home() -> Iterator[Path]:
    """A JOB_HOME the job user may enter (the suite's temporary folders are root's alone)."""
    home = Path(tempfile.mkdtemp(prefix="jobrunner-jobhome-", dir="/tmp"))
    home.chmod(0o755)
    (home / "bin").mkdir(mode=0o755)
    (home / "bin" / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (home / "bin" / "tool.sh").chmod(0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("mode", ["cgroup", "subreaper"])
def test_a_job_cannot_read_the_workers_secrets_nor_write_its_scripts(
    mode: str, api: Api, base_env: dict[str, str], log_dir: Path, user_job_home: Path
) -> None:
    queue = f"as-job-user-{mode}"
    env = dict(
        base_env,
        JOB_HOME=str(user_job_home),
        JOBRUNNER_JOB_USER=JOB_USER,
        JOBRUNNER_CONTAINMENT=mode,
        WORKER_QUEUES=queue,
    )
    worker: Process = start_worker(env, log_dir, f"job-user-{mode}")
    pidfile = Path(tempfile.mkdtemp(prefix="jobrunner-pid-", dir="/tmp")) / "escapee"
    pidfile.parent.chmod(0o777)
    try:
        job = api.submit(command=PROBE.replace("PIDFILE", str(pidfile)), queue=queue)
        final = api.wait(job["id"], timeout=30)
        assert final["state"] == "succeeded", (final, api.output(job["id"]))
        lines = api.output(job["id"]).splitlines()
        assert lines[0].startswith(f"user={JOB_USER} uid=65534 groups=65534 ")
        assert lines[1:] == [
            "readable environs with secrets: 0",
            "worker environ: refused",
            "bin: refused",
            "script: refused",
        ]
        assert not (user_job_home / "bin" / "planted").exists()
        escapee = int(pidfile.read_text())  # a process of the job user, detached: killed too
        wait_for(lambda: not Path(f"/proc/{escapee}").exists(), timeout=5, what="the escapee")
    finally:
        worker.stop()
        shutil.rmtree(pidfile.parent, ignore_errors=True)


@pytest.mark.parametrize(
    ("job_user", "drop_caps", "message"),
    [
        ("no-such-user-here", False, "no such user"),
        ("root", False, "must not be root"),
        ("0", False, "must not be root"),
        # root without CAP_SETUID/CAP_SETGID (a container started with cap_drop: ALL)
        ("daemon", True, "needs the worker to run as root"),
    ],
)
def test_a_worker_that_cannot_switch_users_refuses_to_start(
    base_env: dict[str, str], job_user: str, drop_caps: bool, message: str
) -> None:
    argv = [JOBRUNNER, "worker"]
    if drop_caps:
        argv = ["setpriv", "--bounding-set=-setuid,-setgid", *argv]
    result = subprocess.run(
        argv,
        env=dict(base_env, JOBRUNNER_JOB_USER=job_user),
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert result.returncode == 1, result
    assert message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
