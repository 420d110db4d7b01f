"""The image's entrypoint: each role name and RUN_MODE value starts its role; anything else runs.

Roles run on the compose stack's network with compose/jobrunner.env, so they find its MariaDB
and Redis; the workers started here serve a queue of their own and take none of its jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.migrate import MIGRATIONS_DIR
from tests.container.conftest import ENV_FILE
from tests.container.oci import (
    HELLO_IMAGE,
    MARIADB_IMAGE,
    RUNNER_IMAGE,
    Podman,
    Stack,
    wait_until,
)

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

ROLE_ENV = {"WORKER_QUEUES": "entrypoint_test", "WORKER_PROCESSES": "1", "WORKER_THREADS": "1"}
#: (arguments, RUN_MODE, the role that must start)
ROLE_CASES = [
    (["web"], None, "web"),
    (["http_server"], None, "web"),
    ([], "web", "web"),
    ([], "http_server", "web"),
    ([], None, "web"),
    (["worker"], None, "worker"),
    (["delayed_job"], None, "worker"),
    ([], "worker", "worker"),
    ([], "delayed_job", "worker"),
    (["web"], "worker", "web"),  # an argument wins over RUN_MODE
]
#: what each role shows in its container's processes (`jobrunner worker` soon execs Dramatiq)
PROCESSES = {"web": ("jobrunner web",), "worker": ("jobrunner worker", "-m dramatiq actors.worker")}

Start = Callable[..., str]

ALL_MIGRATIONS = sorted(path.stem for path in MIGRATIONS_DIR.glob("*.py"))


def _argv(stack: Stack, args: list[str], env: dict[str, str], image: str, *opts: str) -> list[str]:
    argv = ["podman", "run", *opts, "--network", stack.network, "--env-file", str(ENV_FILE)]
    for name, value in env.items():
        argv += ["-e", f"{name}={value}"]
    return [*argv, image, *args]


@pytest.fixture
def start(stack: Stack) -> Iterator[Start]:
    """Start a detached container of the runner image on the stack's network; removed after."""
    started: list[str] = []

    def start_(
        args: list[str], env: dict[str, str] | None = None, image: str = RUNNER_IMAGE
    ) -> str:
        argv = _argv(stack, args, {**ROLE_ENV, **(env or {})}, image, "-d")
        container = stack.oci.run(argv).stdout.strip()
        started.append(container)
        return container

    yield start_
    for container in started:
        stack.oci.podman("rm", "-f", "-v", "-t", "0", container, check=False)


def _runs(stack: Stack, container: str, processes: tuple[str, ...]) -> bool:
    top = stack.oci.podman("top", container, "args")
    return any(process in top for process in processes)


def test_each_role_name_and_run_mode_starts_its_role(stack: Stack, start: Start) -> None:
    # the entrypoint's choice shows in the process it execs; test_stack.py follows web and
    # worker through to serving requests and running jobs
    def start_case(case: tuple[list[str], str | None, str]) -> str:
        args, run_mode, _ = case
        return start(args, {"RUN_MODE": run_mode} if run_mode else {})

    with ThreadPoolExecutor(4) as pool:
        containers = list(pool.map(start_case, ROLE_CASES))
    for container, (args, run_mode, role) in zip(containers, ROLE_CASES, strict=True):
        wait_until(
            lambda c=container, r=role: _runs(stack, c, PROCESSES[r]),
            30,
            f"{PROCESSES[role]} in the container of args={args} RUN_MODE={run_mode}",
        )
        other = PROCESSES["worker" if role == "web" else "web"]
        assert not _runs(stack, container, other), (args, run_mode)
        stack.oci.podman("rm", "-f", "-t", "0", container)


def test_release_role_names_migrate_and_exit(stack: Stack) -> None:
    cases = [(["release"], {}), (["migrate"], {}), ([], {"RUN_MODE": "release"})]
    cases.append(([], {"RUN_MODE": "migrate"}))

    def run(case: tuple[list[str], dict[str, str]]) -> str:
        args, env = case
        return stack.oci.run(_argv(stack, args, env, RUNNER_IMAGE, "--rm")).stdout

    with ThreadPoolExecutor(4) as pool:
        for (args, env), out in zip(cases, pool.map(run, cases), strict=True):
            assert "applied 0 migration(s)" in out, (args, env, out)


def test_release_waits_for_a_database_that_comes_late(stack: Stack, start: Start) -> None:
    url = "mysql+mysqldb://jobrunner:jobrunner@late-db:3306/jobrunner"
    release = start(["release"], {"DATABASE_URL": url, "JOBRUNNER_STARTUP_TIMEOUT": "120"})
    wait_until(lambda: "retrying the migrations" in stack.logs(release), 60, "a retry")
    db_env = {"MARIADB_DATABASE": "jobrunner", "MARIADB_USER": "jobrunner"}
    db_env["MARIADB_PASSWORD"] = "jobrunner"  # as in DATABASE_URL
    argv = ["podman", "run", "-d", "--network", stack.network, "--network-alias", "late-db"]
    for name, value in db_env.items():
        argv += ["-e", f"{name}={value}"]
    db = stack.oci.run([*argv, MARIADB_IMAGE]).stdout.strip()
    try:
        wait_until(lambda: stack.exited(release), 120, "the release to finish")
        assert stack.state(release, "ExitCode") == "0"
        assert f"applied {len(ALL_MIGRATIONS)} migration(s)" in stack.logs(release)
    finally:
        stack.oci.podman("rm", "-f", "-v", "-t", "0", db, check=False)


def test_release_gives_up_after_the_startup_timeout(stack: Stack) -> None:
    env = {
        "DATABASE_URL": "mysql+mysqldb://jobrunner:jobrunner@no-such-db:3306/jobrunner",
        "JOBRUNNER_STARTUP_TIMEOUT": "0",  # one attempt
    }
    result = stack.oci.run(_argv(stack, ["release"], env, RUNNER_IMAGE, "--rm"), check=False)
    assert result.returncode == 1
    assert "giving up" in result.stderr


def test_worker_is_unhealthy_while_it_waits_for_its_database(stack: Stack, start: Start) -> None:
    env = {
        "DATABASE_URL": "mysql+mysqldb://jobrunner:jobrunner@no-such-db:3306/jobrunner",
        "JOBRUNNER_STARTUP_TIMEOUT": "120",
    }
    worker = start(["worker"], env)
    wait_until(
        lambda: "jobrunner worker" in stack.oci.podman("top", worker, "args"),
        30,
        "the worker to start waiting",
    )
    assert not stack.healthy(worker)


def test_other_arguments_run_as_a_command(oci: Podman, images: None) -> None:
    def run(*argv: str, env: dict[str, str] | None = None, image: str = RUNNER_IMAGE) -> str:
        opts = ["podman", "run", "--rm"] + [f"-e{k}={v}" for k, v in (env or {}).items()]
        return oci.run([*opts, image, *argv]).stdout

    with ThreadPoolExecutor(4) as pool:
        hello = pool.submit(run, "hello_world.sh", image=HELLO_IMAGE)  # $JOB_HOME/bin on PATH
        usage = pool.submit(run, "jobrunner", "--help")
        shell = pool.submit(
            run, "sh", "-c", 'echo "$RUN_MODE $JOB_HOME $HOST"', env={"RUN_MODE": "worker"}
        )
        assert hello.result() == "Hello,\nworld!\n"
        assert "Usage: jobrunner" in usage.result()
        assert shell.result() == "worker /app/jobs 0.0.0.0\n"


def test_an_unknown_run_mode_is_refused(oci: Podman, images: None) -> None:
    result = oci.run(
        ["podman", "run", "--rm", "-e", "RUN_MODE=nonsense", RUNNER_IMAGE], check=False
    )
    assert result.returncode == 2
    assert "RUN_MODE=nonsense is not one of" in result.stderr
