"""How the client commands show jobs to people: the `list` table and the `show` details.

Text that comes from the server (commands, errors) is stripped of control characters before it
reaches a terminal: a command line may hold escape sequences or newlines.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = ("ID", "STATE", "QUEUE", "PRI", "ATTEMPTS", "EXIT", "CREATED", "COMMAND")
MIN_COMMAND_WIDTH = 20
RIGHT_ALIGNED = (0, 3)  # ID, PRI
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SIGNAL = re.compile(r"killed by signal (\d+)")


def clean(text: str) -> str:
    """One line, no control characters (runs of them become one space)."""
    return _CONTROL.sub(" ", text).strip()


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value)


def age(value: str | None, now: dt.datetime) -> str:
    """`5s ago`, `12m ago`, `3h ago`, `2d ago`: how long before `now` an API time was."""
    when = parse_time(value)
    if when is None:
        return "-"
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        return "in " + _span(-seconds)
    return _span(seconds) + " ago"


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def short_result(job: Mapping[str, Any]) -> str:
    """The EXIT column: the exit status, or why there is none."""
    if job.get("exit_code") is not None:
        return str(job["exit_code"])
    error = job.get("last_error") or ""
    if error.startswith("timed out"):
        return "timeout"
    if error.startswith("could not start"):
        return "no start"
    signal = _SIGNAL.match(error)
    if signal:
        return f"sig {signal.group(1)}"
    return "-"


def job_row(job: Mapping[str, Any], now: dt.datetime) -> list[str]:
    attempts = f"{job['attempts']}/{job['max_retries'] + 1}"
    return [
        str(job["id"]),
        job["state"],
        job["queue"],
        str(job["priority"]),
        attempts,
        short_result(job),
        age(job.get("created_at"), now),
        clean(job["command"] or ""),
    ]


def job_table(jobs: Sequence[Mapping[str, Any]], width: int, now: dt.datetime) -> str:
    """Aligned columns; the command is cut to fit in `width` characters (at least 20 of it)."""
    rows = [list(COLUMNS)] + [job_row(job, now) for job in jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    room = max(width - sum(widths) - 2 * len(widths), MIN_COMMAND_WIDTH)
    lines = []
    for row in rows:
        cells = [
            cell.rjust(w) if i in RIGHT_ALIGNED else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row[:-1], widths, strict=True))
        ]
        lines.append("  ".join([*cells, truncate(row[-1], room)]).rstrip())
    return "\n".join(lines)


DETAIL_FIELDS = (
    "id",
    "state",
    "command",
    "argv",
    "queue",
    "priority",
    "attempts",
    "max_retries",
    "timeout",
    "exit_code",
    "last_error",
    "run_at",
    "created_at",
    "started_at",
    "finished_at",
    "locked_by",
    "output_bytes",
)


def job_details(job: Mapping[str, Any]) -> str:
    """`name: value` lines of the fields a person looks at (all of them with --json)."""
    lines = []
    for name in DETAIL_FIELDS:
        value = job.get(name)
        if value is None:
            continue
        if name == "argv":
            text = json.dumps(value)
        elif name == "timeout":
            text = f"{value}s"
        elif name == "output_bytes" and job.get("output_truncated"):
            text = f"{value} (the start was dropped)"
        else:
            text = str(value)
        lines.append(f"{name + ':':<13} {clean(text)}")
    return "\n".join(lines)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
