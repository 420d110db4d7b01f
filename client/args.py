"""The option values of the client commands: durations, times, environment variables, the job.

The parsing is plain functions (raising ValueError) with thin click types around them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

import click

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?:\d+[smhd])+")


def parse_duration(text: str) -> int:
    """Seconds from `90`, `90s`, `10m`, `1h30m` or `2d`."""
    value = text.strip().lower()
    if value.isdigit():
        return int(value)
    if not _DURATION.fullmatch(value):
        raise ValueError(f"{text!r} is not a duration such as 90, 90s, 10m or 1h30m")
    return sum(int(n) * UNITS[unit] for n, unit in re.findall(r"(\d+)([smhd])", value))


def format_utc(when: dt.datetime) -> str:
    """The API's time format: UTC, milliseconds, `Z`."""
    utc = when.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_at(text: str, now: dt.datetime | None = None) -> str:
    """A `run_at` for the API from `+DURATION` (from now) or an ISO 8601 time.

    A time without an offset is this machine's local time, as `date` shows it; the API itself
    would take it as UTC, so it is converted here.
    """
    value = text.strip()
    if value.startswith("+"):
        now = now or dt.datetime.now(dt.UTC)
        return format_utc(now + dt.timedelta(seconds=parse_duration(value[1:])))
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time (2026-11-27T10:45:00Z, "
            "2026-11-27 11:45+01:00, 2026-11-27T10:45 in local time) nor +DURATION (+10m)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time
    return format_utc(when)


def parse_env(items: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """`NAME=VALUE` items, or `NAME` alone to pass on the value it has here."""
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not name:
            raise ValueError(f"{item!r} has no variable name (use NAME=VALUE or NAME)")
        if not sep:
            if name not in environ:
                raise ValueError(f"{name} is not set here, so it cannot be passed on")
            value = environ[name]
        env[name] = value
    return env


def job_fields(
    argv: Sequence[str],
    shell: str | None,
    *,
    queue: str | None = None,
    priority: int | None = None,
    timeout: int | None = None,
    retries: int | None = None,
    env: Mapping[str, str] | None = None,
    run_at: str | None = None,
    concurrency_key: str | None = None,
    concurrency_limit: int | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """The body of POST /jobs: `argv` (no shell) or `command` (a shell line), and the options."""
    if argv and shell is not None:
        raise ValueError("give the command either after -- or with --shell, not both")
    if not argv and shell is None:
        raise ValueError("no command: give it after -- (jobrunner submit -- make test) or --shell")
    fields: dict[str, Any] = {"argv": list(argv)} if argv else {"command": shell}
    optional = {
        "queue": queue,
        "priority": priority,
        "timeout": timeout,
        "max_retries": retries,
        "run_at": run_at,
        "env": dict(env) if env else None,
        "concurrency_key": concurrency_key,
        "concurrency_limit": concurrency_limit,
        "callback_url": callback_url,
    }
    fields.update({name: value for name, value in optional.items() if value is not None})
    return fields


class Duration(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class When(click.ParamType):  # type: ignore[type-arg]
    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return parse_at(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
