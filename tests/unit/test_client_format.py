"""The `list` table and the `show` details."""

from __future__ import annotations

import datetime as dt
from typing import Any

from client.format import age, clean, job_details, job_table, short_result

NOW = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.UTC)


def job(job_id: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": job_id,
        "command": "make test",
        "argv": ["make", "test"],
        "queue": "default",
        "priority": 0,
        "state": "succeeded",
        "attempts": 1,
        "max_retries": 0,
        "timeout": 3600,
        "exit_code": 0,
        "last_error": None,
        "created_at": "2026-11-27T11:59:30.000Z",
        "output_bytes": 12,
        "output_truncated": False,
    }
    return base | fields


def test_ages() -> None:
    assert age("2026-11-27T11:59:55.000Z", NOW) == "5s ago"
    assert age("2026-11-27T11:48:00.000Z", NOW) == "12m ago"
    assert age("2026-11-27T09:00:00.000Z", NOW) == "3h ago"
    assert age("2026-11-25T12:00:00.000Z", NOW) == "2d ago"
    assert age("2026-11-27T12:10:00.000Z", NOW) == "in 10m"
    assert age(None, NOW) == "-"


def test_the_exit_column_says_why_there_is_no_status() -> None:
    assert short_result(job(1, exit_code=3)) == "3"
    assert short_result(job(1, exit_code=None, last_error="timed out after 5s")) == "timeout"
    assert short_result(job(1, exit_code=None, last_error="killed by signal 9")) == "sig 9"
    assert short_result(job(1, exit_code=None, last_error="could not start: x")) == "no start"
    assert short_result(job(1, exit_code=None, state="queued")) == "-"


def test_the_table_aligns_columns() -> None:
    jobs = [
        job(7, state="failed", exit_code=3, queue="ci", priority=-10),
        job(123, state="running", exit_code=None, attempts=2, max_retries=2),
    ]
    assert job_table(jobs, 120, NOW).splitlines() == [
        " ID  STATE    QUEUE    PRI  ATTEMPTS  EXIT  CREATED  COMMAND",
        "  7  failed   ci       -10  1/1       3     30s ago  make test",
        "123  running  default    0  2/3       -     30s ago  make test",
    ]


def test_long_commands_are_cut_to_the_width() -> None:
    table = job_table([job(1, command="x" * 200)], 80, NOW)
    lines = table.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].endswith("x…")


def test_a_narrow_terminal_still_shows_some_command() -> None:
    line = job_table([job(1, command="y" * 200)], 10, NOW).splitlines()[1]
    assert line.endswith("y" * 19 + "…")


def test_control_characters_never_reach_the_terminal() -> None:
    assert clean("echo a\nrm -rf /tmp/x\x1b[2J\tdone") == "echo a rm -rf /tmp/x [2J done"
    line = job_table([job(1, command="printf '\\033[2J'\necho\x07hi")], 120, NOW).splitlines()[1]
    assert "\x1b" not in line and "\n" not in line and "\x07" not in line


def test_an_empty_list_is_just_the_header() -> None:
    assert job_table([], 120, NOW) == "ID  STATE  QUEUE  PRI  ATTEMPTS  EXIT  CREATED  COMMAND"


def test_details_skip_what_is_empty() -> None:
    text = job_details(job(5, output_truncated=True, output_bytes=2048))
    assert "id:           5" in text.splitlines()
    assert 'argv:         ["make", "test"]' in text
    assert "timeout:      3600s" in text
    assert "output_bytes: 2048 (the start was dropped)" in text
    assert "last_error" not in text
