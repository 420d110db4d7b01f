"""`jobrunner schedule create|list|show|enable|disable|trigger|delete` (API.md section 7)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import click

from client.args import Duration, job_fields, parse_env
from client.commands import AS_JSON, api_options, connect, reports_errors
from client.format import clean, to_json, truncate

SCHEDULE_ID = click.argument("schedule_id", metavar="ID", type=click.IntRange(min=1))


def timing(schedule: Mapping[str, Any]) -> str:
    if schedule.get("cron"):
        return f"cron {schedule['cron']}"
    return f"every {schedule.get('every')}s"


def schedule_table(schedules: Sequence[Mapping[str, Any]]) -> str:
    rows = [["ID", "NAME", "WHEN", "TIMEZONE", "ENABLED", "NEXT RUN (UTC)", "LAST JOB"]]
    for s in schedules:
        rows.append(
            [
                str(s["id"]),
                truncate(clean(s["name"]), 30),
                truncate(clean(timing(s)), 24),
                s["timezone"],
                "yes" if s["enabled"] else "no",
                s["next_run_at"] or "-",
                str(s["last_job_id"] or "-"),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def schedule_details(schedule: Mapping[str, Any]) -> str:
    job = schedule.get("job") or {}
    command = job.get("command") or ""
    lines = [
        ("id", schedule["id"]),
        ("name", schedule["name"]),
        ("when", timing(schedule)),
        ("timezone", schedule["timezone"]),
        ("enabled", "yes" if schedule["enabled"] else "no"),
        ("overlap", schedule["overlap"]),
        ("next run", schedule["next_run_at"]),
        ("last run", schedule["last_run_at"]),
        ("last job", schedule["last_job_id"]),
        ("command", command),
        ("queue", job.get("queue")),
        ("concurrency", job.get("concurrency_key")),
    ]
    return "\n".join(
        f"{name + ':':<13} {clean(str(value))}" for name, value in lines if value is not None
    )


@click.group()
def schedule() -> None:
    """Schedules: a job made at each cron tick, or every N seconds."""


@schedule.command()
@click.argument("name")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@click.option("--cron", metavar="'M H DOM MON DOW'", help="5 cron fields.")
@click.option("--every", type=Duration(), help="Seconds between ticks, or 30s, 5m, 1h.")
@click.option("--timezone", metavar="TZ", help="IANA time zone of --cron (default UTC).")
@click.option("--overlap", type=click.Choice(["skip", "allow"]), help="Default: skip.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@click.option("--shell", metavar="'COMMAND LINE'", help="A command line for /bin/sh -c.")
@click.option("-q", "--queue", help="Queue name (default: default).")
@click.option("-p", "--priority", type=int, help="Lower runs first (default: 0).")
@click.option("--timeout", type=Duration(), help="Per attempt: seconds, or 90s, 10m, 1h30m.")
@click.option("--retries", type=click.IntRange(min=0), help="Retries after a failure.")
@click.option("-e", "--env", "env_items", multiple=True, metavar="NAME[=VALUE]")
@click.option("--concurrency-key", metavar="KEY")
@click.option("--concurrency-limit", type=click.IntRange(min=1), metavar="N")
@click.option(
    "--callback-url",
    metavar="URL",
    help="POST a signed event to URL when each of its jobs ends.",
)
@AS_JSON
@api_options
@reports_errors
def create(
    name: str,
    argv: tuple[str, ...],
    cron: str | None,
    every: int | None,
    timezone: str | None,
    overlap: str | None,
    disabled: bool,
    shell: str | None,
    queue: str | None,
    priority: int | None,
    timeout: int | None,
    retries: int | None,
    env_items: tuple[str, ...],
    concurrency_key: str | None,
    concurrency_limit: int | None,
    callback_url: str | None,
    as_json: bool,
    url: str,
    token: str | None,
) -> None:
    """Create a schedule NAME for the command after -- (or --shell).

    \b
      jobrunner schedule create nightly --cron '30 2 * * *' --timezone Asia/Tokyo -- bin/x.sh
      jobrunner schedule create heartbeat --every 5 --shell 'date >> beats.txt'
    """
    try:
        env = parse_env(env_items, os.environ)
        job = job_fields(
            argv,
            shell,
            queue=queue,
            priority=priority,
            timeout=timeout,
            retries=retries,
            env=env,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            callback_url=callback_url,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    body: dict[str, Any] = {"name": name, "job": job, "enabled": not disabled}
    optional = {"cron": cron, "every": every, "timezone": timezone, "overlap": overlap}
    body.update({key: value for key, value in optional.items() if value is not None})
    with connect(url, token) as api:
        created = api.create_schedule(body)
    click.echo(to_json(created) if as_json else created["id"])


@schedule.command(name="list")
@AS_JSON
@api_options
@reports_errors
def list_schedules(as_json: bool, url: str, token: str | None) -> None:
    """List the schedules, by name."""
    with connect(url, token) as api:
        found = api.schedules()
    click.echo(to_json(found) if as_json else schedule_table(found))


@schedule.command()
@SCHEDULE_ID
@AS_JSON
@api_options
@reports_errors
def show(schedule_id: int, as_json: bool, url: str, token: str | None) -> None:
    """Show one schedule."""
    with connect(url, token) as api:
        found = api.schedule(schedule_id)
    click.echo(to_json(found) if as_json else schedule_details(found))


def _switch(schedule_id: int, enabled: bool, as_json: bool, url: str, token: str | None) -> None:
    with connect(url, token) as api:
        changed = api.change_schedule(schedule_id, {"enabled": enabled})
    if as_json:
        click.echo(to_json(changed))
    else:
        state = f"enabled, next run {changed['next_run_at']}" if enabled else "disabled"
        click.echo(f"schedule {schedule_id} {state}")


@schedule.command()
@SCHEDULE_ID
@AS_JSON
@api_options
@reports_errors
def enable(schedule_id: int, as_json: bool, url: str, token: str | None) -> None:
    """Enable a schedule: its next tick comes from now on."""
    _switch(schedule_id, True, as_json, url, token)


@schedule.command()
@SCHEDULE_ID
@AS_JSON
@api_options
@reports_errors
def disable(schedule_id: int, as_json: bool, url: str, token: str | None) -> None:
    """Disable a schedule (trigger still works)."""
    _switch(schedule_id, False, as_json, url, token)


@schedule.command()
@SCHEDULE_ID
@AS_JSON
@api_options
@reports_errors
def trigger(schedule_id: int, as_json: bool, url: str, token: str | None) -> None:
    """Create the schedule's job now; print its id."""
    with connect(url, token) as api:
        job = api.trigger(schedule_id)
    click.echo(to_json(job) if as_json else job["id"])


@schedule.command()
@SCHEDULE_ID
@api_options
@reports_errors
def delete(schedule_id: int, url: str, token: str | None) -> None:
    """Delete a schedule (the jobs it made stay)."""
    with connect(url, token) as api:
        api.delete_schedule(schedule_id)
    click.echo(f"schedule {schedule_id} deleted")
