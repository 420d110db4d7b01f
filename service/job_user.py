"""The unprivileged user that job commands run as (`JOBRUNNER_JOB_USER`), when there is one.

A worker holds the secrets of the deployment in its environment (DATABASE_URL, REDIS_URL,
tokens); a command running as the worker's own user could read them from /proc/<pid>/environ,
whatever clean environment it was given. With a job user, the worker (root, or with
CAP_SETUID and CAP_SETGID) starts every command as that user, with no supplementary group and
no capability: /proc of the worker, and of anything else not of that user, is closed to it.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

#: capability bits (linux/capability.h) a worker needs to start commands as another user
CAP_SETGID = 6
CAP_SETUID = 7


class JobUserError(ValueError):
    """JOBRUNNER_JOB_USER names no usable user, or this process cannot switch to it."""


@dataclass(frozen=True)
class JobUser:
    name: str
    uid: int
    gid: int
    home: str


def resolve(spec: str) -> JobUser:
    """The user a `JOBRUNNER_JOB_USER` value names: a user name, or a numeric uid."""
    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except (KeyError, OverflowError):
        raise JobUserError(f"JOBRUNNER_JOB_USER={spec!r}: no such user") from None
    if entry.pw_uid == 0:
        raise JobUserError("JOBRUNNER_JOB_USER must not be root: jobs would hold every right")
    return JobUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir or "/")


def _effective_capabilities() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def can_switch_to(user: JobUser) -> None:
    """Raise JobUserError unless this process may start commands as `user`."""
    if os.geteuid() == user.uid:
        raise JobUserError(
            f"JOBRUNNER_JOB_USER={user.name} is the worker's own user: jobs could read the "
            "worker's secrets; run the worker as root (the image does) or as another user"
        )
    caps = _effective_capabilities()
    if not (caps >> CAP_SETUID & 1 and caps >> CAP_SETGID & 1):
        raise JobUserError(
            f"JOBRUNNER_JOB_USER={user.name} needs the worker to run as root (or with "
            "CAP_SETUID and CAP_SETGID) to start commands as that user; leave it empty to run "
            "them as the worker's own user (which can then read the worker's secrets)"
        )
