"""The compose stack for real: MariaDB, Redis, release, web and workers as podman containers.

The tests run in file order and share one stack; the last one stops it and checks that nothing
is left (this module sorts after test_entrypoint.py, which uses the same stack).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.migrate import MIGRATIONS_DIR
from tests.container.oci import Stack, wait_until

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

HELLO_OUTPUT = "Hello,\nworld!\n"
FINAL = {"succeeded", "failed", "cancelled"}

ALL_MIGRATIONS = sorted(path.stem for path in MIGRATIONS_DIR.glob("*.py"))


def submit(stack: Stack, headers: dict[str, str], command: str) -> int:
    """POST a job through the published port, with the original's form fields."""
    response = httpx.post(
        f"{stack.url}/jobs", data={"job[command]": command}, headers=headers, timeout=10
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def finished(stack: Stack, headers: dict[str, str], job_id: int) -> dict[str, Any]:
    """The job once it has reached a final state."""

    def final() -> dict[str, Any] | None:
        job = httpx.get(f"{stack.url}/jobs/{job_id}", headers=headers, timeout=10).json()
        return job if job["state"] in FINAL else None

    return wait_until(final, 60, f"job {job_id} to finish")


def output(stack: Stack, headers: dict[str, str], job_id: int) -> str:
    return httpx.get(f"{stack.url}/jobs/{job_id}/output", headers=headers, timeout=10).text


def test_release_migrated_and_exited(stack: Stack) -> None:
    [release] = stack.containers("release")
    wait_until(lambda: stack.exited(release), 120, "the release container to exit")
    assert stack.state(release, "ExitCode") == "0"
    applied = f"applied {len(ALL_MIGRATIONS)} migration(s): {', '.join(ALL_MIGRATIONS)}"
    assert applied in stack.logs(release)


def test_hello_world_job_succeeds_through_the_published_port(
    stack: Stack, api_headers: dict[str, str]
) -> None:
    job_id = submit(stack, api_headers, "bin/hello_world.sh")
    job = finished(stack, api_headers, job_id)
    assert (job["state"], job["exit_code"]) == ("succeeded", 0), job
    assert output(stack, api_headers, job_id) == HELLO_OUTPUT


@pytest.mark.parametrize(
    ("service", "process", "user"),
    [("web", "jobrunner web", "jobrunner"), ("worker", "dramatiq", "root")],
)
def test_role_runs_under_tini_as_its_user(
    stack: Stack, service: str, process: str, user: str
) -> None:
    """The web drops to `jobrunner`; the worker stays root only to start jobs as `job`."""
    [container] = stack.containers(service)
    assert stack.oci.podman("exec", container, "readlink", "/proc/1/exe") == "/usr/bin/tini"
    top = stack.oci.podman("top", container, "user", "args").splitlines()
    assert "jobrunner-entrypoint" in top[1], top  # PID 1: tini -- entrypoint (root)
    # the role's processes (not a health check that podman may be running beside them)
    roles = [line.split(None, 1) for line in top[2:] if "healthcheck" not in line]
    assert any(process in args for _, args in roles), top
    assert {who for who, _ in roles} == {user}, top


#: run by a job in the stack's worker: what it can reach of the deployment's secrets
PROBE = r"""
echo "user=$(id -un) caps=$(grep CapEff /proc/self/status | cut -f2)"
n=0; for f in /proc/[0-9]*/environ; do
  grep -qa -e DATABASE_URL -e JOBRUNNER_API_TOKENS "$f" 2>/dev/null && n=$((n+1))
done; echo "environs with secrets: $n"
touch "$JOB_HOME/bin/planted" 2>/dev/null && echo "bin: written" || echo "bin: refused"
/opt/venv/bin/python - <<'PY'
import socket
s = socket.create_connection(("redis", 6379), timeout=5)
s.sendall(b"PING" + bytes([13, 10])); print("redis:", s.recv(100).decode().split()[0])
import MySQLdb
for user in ("jobrunner", "root"):
    try:
        MySQLdb.connect(host="mariadb", user=user, connect_timeout=5)
        print("mariadb", user, "connected")
    except MySQLdb.OperationalError as exc:
        print("mariadb", user, exc.args[0])
PY
"""


def test_a_job_reaches_no_secret_of_the_stack(stack: Stack, api_headers: dict[str, str]) -> None:
    """As `job`, without capabilities: no environ holding a secret is readable, the scripts
    are not writable, and Redis and MariaDB want passwords the job was not given."""
    job_id = submit(stack, api_headers, PROBE)
    job = finished(stack, api_headers, job_id)
    assert job["state"] == "succeeded", (job, output(stack, api_headers, job_id))
    assert output(stack, api_headers, job_id).splitlines() == [
        "user=job caps=0000000000000000",
        "environs with secrets: 0",
        "bin: refused",
        "redis: -NOAUTH",
        "mariadb jobrunner 1045",
        "mariadb root 1045",
    ]


@pytest.mark.parametrize("service", ["web", "worker", "mariadb", "redis"])
def test_healthcheck_passes(stack: Stack, service: str) -> None:
    [container] = stack.containers(service)
    wait_until(lambda: stack.healthy(container), 60, f"{container} to be healthy")
    assert stack.state(container, "Health.Status") == "healthy"


def test_tini_reaps_what_a_job_left_behind(stack: Stack, api_headers: dict[str, str]) -> None:
    # Both grandchildren outlive the job's shell and are re-parented to PID 1: the first, still in
    # the job's process group, is killed by the worker when the job ends; the second left the
    # group (setsid) and ends by itself a second later. Only a reaping PID 1 makes them vanish:
    # otherwise they would stay zombies (/proc/PID with state Z) for as long as the container.
    command = (
        "sleep 30 & echo $!; setsid sh -c 'sleep 1' </dev/null >/dev/null 2>&1 & echo $!; sleep 0.2"
    )
    job_id = submit(stack, api_headers, command)
    assert finished(stack, api_headers, job_id)["state"] == "succeeded"
    pids = output(stack, api_headers, job_id).split()
    assert len(pids) == 2, pids
    [worker] = stack.containers("worker")
    for pid in pids:
        wait_until(
            lambda p=pid: not stack.succeeds("exec", worker, "test", "-e", f"/proc/{p}"),
            10,
            f"process {pid} of job {job_id} to be reaped",
        )


def test_scaled_workers_both_run_jobs(stack: Stack, api_headers: dict[str, str]) -> None:
    stack.compose("up", "-d", "--scale", "worker=2")
    workers = stack.containers("worker")
    assert len(workers) == 2, workers
    for worker in workers:
        wait_until(lambda w=worker: stack.healthy(w), 60, f"{worker} to be healthy")
        wait_until(
            lambda w=worker: "worker process ready" in stack.logs(w),
            60,
            f"{worker} to take jobs",
        )
    hostnames = {
        stack.oci.podman("inspect", w, "--format", "{{.Config.Hostname}}") for w in workers
    }
    # 8 jobs of a second each, 1 x 4 threads a worker (jobrunner.env): one cannot take them all
    job_ids = [submit(stack, api_headers, "bin/hello_world.sh") for _ in range(8)]
    jobs = [finished(stack, api_headers, job_id) for job_id in job_ids]
    assert [job["state"] for job in jobs] == ["succeeded"] * 8, jobs
    assert {output(stack, api_headers, job_id) for job_id in job_ids} == {HELLO_OUTPUT}
    assert {job["locked_by"].split(":")[0] for job in jobs} == hostnames


def test_stack_stops_cleanly(stack: Stack) -> None:
    exit_codes = stack.stop_roles()
    # SIGTERM reached them through tini and they ended on their own: a worker exits 0, uvicorn
    # re-raises the signal once shut down (143); 137 would mean SIGKILL after the timeout
    assert exit_codes and all(code in (0, 143) for code in exit_codes.values()), exit_codes
    stack.remove_scaled()
    stack.compose("down", "-v", "--remove-orphans")
    assert stack.leftovers() == {}
