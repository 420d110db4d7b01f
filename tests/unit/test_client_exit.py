"""The exit code of `jobrunner submit --wait`: what a shell would give for the same ending."""

from __future__ import annotations

from typing import Any

import pytest

from client.exit import describe_end, ended_without_exit_status, exit_code_for


def job(state: str, exit_code: int | None = None, last_error: str | None = None) -> dict[str, Any]:
    return {"id": 42, "state": state, "exit_code": exit_code, "last_error": last_error}


@pytest.mark.parametrize(
    ("ending", "code"),
    [
        (job("succeeded", 0), 0),
        (job("failed", 3, "exit status 3"), 3),
        (job("failed", 255, "exit status 255"), 255),
        (job("failed", None, "killed by signal 9"), 137),
        (job("failed", None, "killed by signal 15"), 143),
        (job("failed", None, "timed out after 30s"), 124),
        (job("failed", None, "could not start: [Errno 2] No such file"), 127),
        (job("cancelled", None, "cancelled"), 130),
        (job("cancelled", 3, "cancelled"), 130),
        (job("failed", None, "worker lost"), 125),
        (job("failed", None, None), 125),
        (job("failed", 300, "exit status 300"), 125),
    ],
)
def test_exit_codes_of_a_server_without_end_reasons(ending: dict[str, Any], code: int) -> None:
    assert exit_code_for(ending) == code


def ended(state: str, reason: str | None, **fields: Any) -> dict[str, Any]:
    # last_error says nothing here: the codes must come from the end reason
    return {"id": 42, "state": state, "exit_code": None, "last_error": "?", "end_reason": reason,
            "exit_signal": None, **fields}  # fmt: skip


@pytest.mark.parametrize(
    ("ending", "code"),
    [
        (ended("succeeded", "exited", exit_code=0), 0),
        (ended("failed", "exited", exit_code=3), 3),
        (ended("failed", "signal", exit_signal=9), 137),
        (ended("failed", "timeout"), 124),
        (ended("failed", "not_started"), 127),
        (ended("failed", "worker_lost"), 125),
        (ended("cancelled", "cancelled"), 130),
        (ended("cancelled", None), 130),
        (ended("failed", None), 125),
    ],
)
def test_exit_codes_from_the_end_reason(ending: dict[str, Any], code: int) -> None:
    assert exit_code_for(ending) == code


@pytest.mark.parametrize("state", ["scheduled", "queued", "running", "retrying"])
def test_a_job_not_finished_has_no_exit_code(state: str) -> None:
    with pytest.raises(ValueError, match="not finished"):
        exit_code_for(job(state))


def test_descriptions_say_why() -> None:
    assert describe_end(job("succeeded", 0)) == "job 42 succeeded"
    assert describe_end(job("failed", 3, "exit status 3")) == "job 42 failed (exit status 3)"
    assert describe_end(job("cancelled", None, "cancelled")) == "job 42 cancelled"


def test_a_note_is_due_when_the_command_did_not_end_by_itself() -> None:
    assert not ended_without_exit_status(job("succeeded", 0))
    assert not ended_without_exit_status(job("failed", 3, "exit status 3"))
    assert ended_without_exit_status(job("failed", None, "timed out after 1s"))
    assert ended_without_exit_status(job("cancelled", None, "cancelled"))
