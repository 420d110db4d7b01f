#!/usr/bin/env python3
"""HEALTHCHECK of the HTTP Job Runner image: what "healthy" means depends on the role running.

web      `GET http://127.0.0.1:$PORT/healthz` answers 200 (the process serves HTTP).
worker   the Dramatiq process (`python -m dramatiq actors.worker`) lives. A worker serves no
         HTTP; and a liveness check must not fail while Redis or the database is down, or an
         orchestrator would restart a worker (and kill its running jobs) for someone else's
         outage. Until Dramatiq has started (the role still waits for its database and Redis)
         the worker is not healthy yet.
other    release, or a command of yours: nothing to probe, healthy.

The role is read from the processes of the container (/proc), so the check needs no state file
and works with a read-only root filesystem. Exit 0 when healthy, 1 when not (one line says why).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path


def _commands() -> list[list[str]]:
    """The argv of every process of the container that we may read."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if raw:
            found.append(raw.rstrip(b"\0").decode(errors="replace").split("\0"))
    return found


def _is_role(argv: list[str], role: str) -> bool:
    """`jobrunner <role>`, as the entrypoint starts it (python .../bin/jobrunner web)."""
    return any(Path(arg).name == "jobrunner" for arg in argv[:2]) and role in argv[1:3]


def _is_dramatiq(argv: list[str]) -> bool:
    return "dramatiq" in argv and "actors.worker" in argv


def check() -> tuple[bool, str]:
    """(healthy, why) for the role this container runs."""
    commands = _commands()
    if any(_is_role(argv, "web") for argv in commands):
        url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=4) as response:
                return response.status == 200, f"web: {url} answered {response.status}"
        except OSError as exc:
            return False, f"web: {url} failed: {exc}"
    if any(_is_dramatiq(argv) for argv in commands):
        return True, "worker: the Dramatiq process lives"
    if any(_is_role(argv, "worker") for argv in commands):
        return False, "worker: still waiting for its database and Redis"
    return True, "no web or worker role runs here: nothing to check"


if __name__ == "__main__":
    healthy, why = check()
    sys.stdout.write(why + "\n")
    sys.exit(0 if healthy else 1)
