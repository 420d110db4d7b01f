"""Podman for the container tests: every bit of state under one WORK folder, builds, compose.

This machine kind has no Docker engine and reaches no container registry, so the tests follow
the recipe in shared/research/containers.md: rootful podman with its configuration, storage and
networks under WORK (nothing in /etc/containers or /var/lib/containers is used), runc instead
of crun, explicit ulimits, builds in docker format (HEALTHCHECK kept) with chroot isolation and
the host's CA bundle mounted for pip, a base image made with debootstrap, podman-compose from PyPI.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("JOBRUNNER_OCI_WORK", "/tmp/jobrunner-oci"))
BASE_IMAGE = os.environ.get("JOBRUNNER_OCI_BASE", "localhost/debian-python:bookworm")
RUNNER_IMAGE = "localhost/http-job-runner:test"
HELLO_IMAGE = "localhost/http-job-runner-hello-world:test"
# the names compose/compose.local.yaml gives them
MARIADB_IMAGE = "localhost/jobrunner-mariadb:10.11"
REDIS_IMAGE = "localhost/jobrunner-redis:7"
PODMAN_COMPOSE = "podman-compose==1.6.0"
# what the tests need besides podman (scripts/container-test installs them)
TOOLS = ("buildah", "runc", "debootstrap", "netavark", "slirp4netns")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
T = TypeVar("T")


class CommandError(AssertionError):
    """A command of the tests failed; the message has its output."""


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll until `predicate` returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _noise(line: str) -> bool:
    """Podman's complaints about the missing systemd (harmless: health runs by hand here)."""
    return "systemd" in line or "failed to connect to syslog" in line


@dataclass
class Podman:
    """Runs podman, buildah-backed builds and podman-compose with their state under `work`."""

    work: Path = WORK
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "logs").mkdir(exist_ok=True)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        # podman lowers its own nproc to 32768: a container cannot get more
        nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
        nofile = 65536 if nofile == resource.RLIM_INFINITY else nofile
        (self.work / "containers.conf").write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            "[network]\n"
            'network_backend = "netavark"\n'
            f'network_config_dir = "{self.work}/networks"\n'
            "[engine]\n"
            'runtime = "runc"\n'
        )
        (self.work / "storage.conf").write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'runroot = "{self.work}/run"\n'
            f'graphroot = "{self.work}/storage"\n'
        )
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(self.work / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.work / "storage.conf"),
        }

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command with podman's settings; fail with its output if `check` and it fails."""
        result = subprocess.run(
            list(argv),
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        result.stderr = "\n".join(line for line in result.stderr.splitlines() if not _noise(line))
        if check and result.returncode != 0:
            raise CommandError(
                f"{' '.join(argv)} exited {result.returncode}\n"
                f"--- stdout\n{_tail(result.stdout)}\n--- stderr\n{_tail(result.stderr)}"
            )
        return result

    def podman(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """`podman ARGS`; its standard output, stripped."""
        return self.run(["podman", *args], check=check, timeout=timeout).stdout.strip()

    def timed(self, what: str, started: float) -> None:
        """Append how long `what` took to WORK/logs/timings.txt."""
        with (self.work / "logs" / "timings.txt").open("a") as log:
            log.write(f"{time.strftime('%H:%M:%S')} {what}: {time.monotonic() - started:.1f} s\n")

    def image_exists(self, image: str) -> bool:
        return self.run(["podman", "image", "exists", image], check=False).returncode == 0

    def build_base_image(self) -> None:
        """The debootstrap base (about a minute), unless it is there already."""
        if self.image_exists(BASE_IMAGE):
            return
        started = time.monotonic()
        script = ROOT / "tests" / "container" / "build-base-image.sh"
        self.run([str(script), BASE_IMAGE, str(self.work / "base")], timeout=900)
        self.timed(f"base image {BASE_IMAGE}", started)

    def build(self, context: Path, tag: str, base: str) -> None:
        """Build `context`'s Dockerfile with BASE=`base`; layers are cached between runs."""
        argv = [
            "podman", "build", "--layers", "--format", "docker", "--pull=never",
            "--isolation", "chroot", "--build-arg", f"BASE={base}", "-t", tag,
        ]  # fmt: skip
        if list(Path("/usr/local/share/ca-certificates").glob("*.crt")):
            # an intercepting proxy's CA, for pip inside RUN steps; nothing of it stays in the image
            argv += ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
        started = time.monotonic()
        result = self.run([*argv, str(context)], timeout=900)
        self.timed(f"build {tag}", started)
        log = self.work / "logs" / f"build-{tag.rsplit('/', 1)[-1].replace(':', '-')}.log"
        log.write_text(result.stdout + result.stderr)

    def podman_compose(self) -> Path:
        """podman-compose from PyPI in a virtualenv of its own under WORK."""
        venv = self.work / "venv"
        exe = venv / "bin" / "podman-compose"
        version = venv / "installed"
        if not exe.exists() or not version.exists() or version.read_text() != PODMAN_COMPOSE:
            started = time.monotonic()
            shutil.rmtree(venv, ignore_errors=True)
            self.run([sys.executable, "-m", "venv", str(venv)])
            self.run([str(venv / "bin" / "pip"), "install", "-q", PODMAN_COMPOSE], timeout=300)
            version.write_text(PODMAN_COMPOSE)
            self.timed(PODMAN_COMPOSE, started)
        return exe


def missing_tools() -> list[str]:
    """The programs besides podman that the tests need and this machine lacks."""
    return [tool for tool in TOOLS if shutil.which(tool) is None and not _libexec(tool)]


def _libexec(tool: str) -> bool:
    return any(Path(d, tool).exists() for d in ("/usr/libexec/podman", "/usr/lib/podman"))


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


@dataclass
class Stack:
    """The compose stack (compose.yaml + compose.local.yaml) as one podman-compose project."""

    oci: Podman
    compose_exe: Path
    project: str
    port: int
    image: str = HELLO_IMAGE

    files = (ROOT / "compose" / "compose.yaml", ROOT / "compose" / "compose.local.yaml")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def network(self) -> str:
        return f"{self.project}_default"

    @property
    def label(self) -> str:
        return f"label=io.podman.compose.project={self.project}"

    def compose(self, *args: str, timeout: float = 300) -> str:
        """`podman-compose -p PROJECT -f compose.yaml -f compose.local.yaml ARGS`."""
        argv = [str(self.compose_exe), "-p", self.project]
        for path in self.files:
            argv += ["-f", str(path)]
        env = {"JOBRUNNER_IMAGE": self.image, "JOBRUNNER_PORT": str(self.port)}
        result = self.oci.run([*argv, *args], env=env, timeout=timeout)
        with (self.oci.work / "logs" / f"compose-{self.project}.log").open("a") as log:
            log.write(f"$ podman-compose {' '.join(args)}\n{result.stdout}{result.stderr}\n")
        return result.stdout

    def containers(self, service: str | None = None) -> list[str]:
        """Names of the project's containers (of one service), running or not, sorted."""
        argv = ["ps", "-a", "--filter", self.label, "--format", "{{.Names}}"]
        if service:
            argv += ["--filter", f"label=com.docker.compose.service={service}"]
        return sorted(self.oci.podman(*argv).split())

    def succeeds(self, *argv: str) -> bool:
        """Whether `podman ARGV` exits 0."""
        return self.oci.run(["podman", *argv], check=False).returncode == 0

    def healthy(self, container: str) -> bool:
        """Run the container's HEALTHCHECK now (no systemd here runs it on a timer)."""
        return self.succeeds("healthcheck", "run", container)

    def state(self, container: str, field: str = "Status") -> str:
        """`podman inspect` of one field of .State (Status, ExitCode, Health.Status...)."""
        return self.oci.podman("inspect", container, "--format", f"{{{{.State.{field}}}}}")

    def exited(self, container: str) -> bool:
        return self.state(container) == "exited"

    def logs(self, container: str) -> str:
        """Standard output and error of a container, together."""
        result = self.oci.run(["podman", "logs", container], check=False)
        return result.stdout + result.stderr

    def stop_roles(self, timeout: int = 30) -> dict[str, int]:
        """Stop web and workers with SIGTERM (before their database and Redis, as docker compose
        does; podman-compose stops everything at once) and return their exit codes."""
        names = self.containers("web") + self.containers("worker")
        if names:
            self.oci.podman("stop", "-t", str(timeout), *names, timeout=timeout + 30)
        return {
            name: int(self.oci.podman("inspect", name, "--format", "{{.State.ExitCode}}"))
            for name in names
        }

    def remove_scaled(self) -> None:
        """podman-compose down knows only the first container of a service: remove the others."""
        for name in self.containers("worker")[1:]:
            self.oci.podman("rm", "-f", name)

    def leftovers(self) -> dict[str, list[str]]:
        """The project's containers, volumes and networks that still exist."""
        found = {
            "containers": self.containers(),
            "volumes": self.oci.podman("volume", "ls", "-q", "--filter", self.label).split(),
            "networks": self.oci.podman(
                "network", "ls", "--filter", self.label, "--format", "{{.Name}}"
            ).split(),
        }
        return {kind: names for kind, names in found.items() if names}

    def force_remove(self) -> None:
        """Last resort after a failed test: remove whatever the project left."""
        for name in self.containers():
            self.oci.podman("rm", "-f", "-t", "0", name, check=False)
        left = self.leftovers()
        for volume in left.get("volumes", []):
            self.oci.podman("volume", "rm", "-f", volume, check=False)
        for network in left.get("networks", []):
            self.oci.podman("network", "rm", "-f", network, check=False)
