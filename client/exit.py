"""The exit code of `jobrunner submit --wait` for a finished job: what a shell would give.

    the job                                      exit code
    succeeded                                    0
    failed with exit status N                    N
    killed by signal N                           128 + N   (as a shell reports it)
    timed out                                    124       (as timeout(1))
    could not start (no such program, ...)       127       (as a shell's "command not found")
    cancelled                                    130       (as a command stopped by Ctrl-C)
    failed with no exit status otherwise         125       (e.g. its worker was lost)

The client's own failures: 1 (an API error, the server unreachable), 2 (bad usage, or input
the server refused: 400, 422); Ctrl-C while waiting cancels the job and exits 130 (SIGTERM: 143).

It reads how the job's last attempt ended from `end_reason` and `exit_signal`; a server too old
to send them is read from its `last_error` text instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

EXIT_RUNNER_FAILED = 125
EXIT_NOT_STARTED = 127
EXIT_TIMED_OUT = 124
EXIT_CANCELLED = 130
_SIGNAL = re.compile(r"killed by signal (\d+)")


def exit_code_for(job: Mapping[str, Any]) -> int:
    """The shell-like exit code of a job in a final state."""
    state = job["state"]
    if state == "succeeded":
        return 0
    if state == "cancelled":
        return EXIT_CANCELLED
    if state != "failed":
        raise ValueError(f"job {job.get('id')} is {state}, not finished")
    code = job.get("exit_code")
    if isinstance(code, int) and code != 0:
        return code if 0 < code < 256 else EXIT_RUNNER_FAILED
    if "end_reason" in job:
        return _by_end_reason(job)
    error = job.get("last_error") or ""
    if error.startswith("timed out"):
        return EXIT_TIMED_OUT
    if error.startswith("could not start"):
        return EXIT_NOT_STARTED
    signal = _SIGNAL.match(error)
    if signal:
        return 128 + int(signal.group(1))
    return EXIT_RUNNER_FAILED


_BY_REASON = {
    "timeout": EXIT_TIMED_OUT,
    "not_started": EXIT_NOT_STARTED,
    "cancelled": EXIT_CANCELLED,
}


def _by_end_reason(job: Mapping[str, Any]) -> int:
    reason, signal = job.get("end_reason"), job.get("exit_signal")
    if reason == "signal" and isinstance(signal, int) and 0 < signal < 128:
        return 128 + signal
    return _BY_REASON.get(str(reason), EXIT_RUNNER_FAILED)


def describe_end(job: Mapping[str, Any]) -> str:
    """`job 42 failed (timed out after 30s)`: how a finished job ended, in one line."""
    error = job.get("last_error")
    detail = f" ({error})" if error and error != job["state"] else ""
    return f"job {job['id']} {job['state']}{detail}"


def ended_without_exit_status(job: Mapping[str, Any]) -> bool:
    """True when the command did not end by itself with a status, so a note is due."""
    return job["state"] != "succeeded" and job.get("exit_code") is None
