"""The client commands of `jobrunner`: submit, wait, list, show, output, cancel, retry.

They call the API at JOBRUNNER_URL (or --url) with JOBRUNNER_TOKEN (or --token). Results go to
stdout, everything else to stderr: one line per error, `jobrunner: ...`. Exit codes are listed
in client.exit.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any, BinaryIO, Literal, TextIO, TypeVar

import click

from client.api import DEFAULT_URL, ApiClient, ClientError, Job
from client.args import Duration, When, job_fields, parse_env
from client.exit import describe_end, ended_without_exit_status, exit_code_for
from client.format import job_details, job_table, to_json
from client.progress import Progress
from client.wait import OutputWriter, Waiter, await_job

STATES = ("scheduled", "queued", "running", "retrying", "succeeded", "failed", "cancelled")
DEFAULT_LIST_LIMIT = 50
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command whose reader went away
F = TypeVar("F", bound=Callable[..., Any])


def _text_stream(name: Literal["stdout", "stderr"]) -> TextIO:
    stream: TextIO = click.get_text_stream(name)  # type: ignore[operator]  # click 8.5's hints
    return stream


def _binary_stream(name: Literal["stdout", "stderr"]) -> BinaryIO:
    stream: BinaryIO = click.get_binary_stream(name)  # type: ignore[operator]
    return stream


def api_options(command: F) -> F:
    """--url and --token, from JOBRUNNER_URL and JOBRUNNER_TOKEN by default."""
    command = click.option(
        "--token",
        envvar="JOBRUNNER_TOKEN",
        show_envvar=True,
        help="API token, sent as 'Authorization: Bearer TOKEN'.",
    )(command)
    return click.option(
        "--url",
        envvar="JOBRUNNER_URL",
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
        help="Where the job API is.",
    )(command)


def reports_errors(command: F) -> F:
    """API errors become one line on stderr and exit code 1 (2 for refused input)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ClientError as exc:
            click.echo(f"jobrunner: {exc}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            # the reader of stdout is gone (`| head`): stop quietly, and let Python's final
            # flush of stdout go nowhere instead of failing again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def connect(url: str, token: str | None) -> ApiClient:
    if not url.startswith(("http://", "https://")):
        raise click.UsageError(f"the API URL must start with http:// or https://, not {url!r}")
    return ApiClient(url, token or None)


def wait_for_end(api: ApiClient, job_id: int, *, follow: bool, as_json: bool) -> int:
    """Wait until the job is final, show its output (as it comes with `follow`, else at the
    end) or its JSON, and return the exit code the client should exit with."""
    stderr = _text_stream("stderr")
    progress = Progress(
        stderr, job_id, enabled=stderr.isatty(), shares_terminal=sys.stdout.isatty()
    )
    writer = OutputWriter(_binary_stream("stdout"), progress.note)
    waiter = Waiter(api, job_id, writer=writer if follow else None, progress=progress)
    job, interrupted = await_job(waiter)
    if job is None:
        return interrupted or 130
    if as_json:
        click.echo(to_json(job))
    elif not follow:
        writer.take(waiter.call(api.output, job_id))
    progress.output_written(writer.ends_line)
    if ended_without_exit_status(job):
        progress.note(describe_end(job))
    else:
        progress.finish(describe_end(job))
    return interrupted if interrupted is not None else exit_code_for(job)


JOB_ID = click.argument("job_id", metavar="ID", type=click.IntRange(min=1))
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")


@click.command(context_settings={"allow_interspersed_args": False})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@click.option("--shell", metavar="'COMMAND LINE'", help="A command line for /bin/sh -c.")
@click.option("-q", "--queue", help="Queue name (default: default).")
@click.option("-p", "--priority", type=int, help="Lower runs first (default: 0).")
@click.option("--timeout", type=Duration(), help="Per attempt: seconds, or 90s, 10m, 1h30m.")
@click.option("--retries", type=click.IntRange(min=0), help="Retries after a failure.")
@click.option(
    "-e",
    "--env",
    "env_items",
    multiple=True,
    metavar="NAME[=VALUE]",
    help="Set NAME for the command; NAME alone passes on its value here. Repeatable.",
)
@click.option(
    "--at",
    "run_at",
    type=When(),
    metavar="TIME",
    help="Run at an ISO 8601 time (local time without an offset), or +DURATION from now.",
)
@click.option(
    "--callback-url",
    metavar="URL",
    help="POST a signed event to URL when the job ends (succeeded, failed or cancelled).",
)
@click.option("--idempotency-key", metavar="KEY", help="Submit at most once per KEY.")
@click.option(
    "--concurrency-key",
    metavar="KEY",
    help="At most --concurrency-limit jobs of KEY run at once; the others wait their turn.",
)
@click.option(
    "--concurrency-limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="With --concurrency-key (default 1).",
)
@click.option("-w", "--wait", is_flag=True, help="Wait for the end; exit with its exit code.")
@click.option("-f", "--follow", is_flag=True, help="Print the output as it comes (implies --wait).")
@AS_JSON
@api_options
@reports_errors
def submit(
    argv: tuple[str, ...],
    shell: str | None,
    queue: str | None,
    priority: int | None,
    timeout: int | None,
    retries: int | None,
    env_items: tuple[str, ...],
    run_at: str | None,
    callback_url: str | None,
    idempotency_key: str | None,
    concurrency_key: str | None,
    concurrency_limit: int | None,
    wait: bool,
    follow: bool,
    as_json: bool,
    url: str,
    token: str | None,
) -> None:
    """Submit a job: the command after -- (run with no shell), or --shell 'COMMAND LINE'.

    \b
      jobrunner submit -- make test                 prints the new job's id
      jobrunner submit --wait --follow -- make test  like running `make test` here
      jobrunner submit --at +10m --shell 'bin/report.sh > out.txt'
      jobrunner submit --concurrency-key deploy-web -- bin/deploy.sh web
    """
    if follow and as_json:
        raise click.UsageError("--follow prints the output: it does not go with --json")
    try:
        env = parse_env(env_items, os.environ)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--env'") from None
    try:
        fields = job_fields(
            argv,
            shell,
            queue=queue,
            priority=priority,
            timeout=timeout,
            retries=retries,
            env=env,
            run_at=run_at,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            callback_url=callback_url,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    with connect(url, token) as api:
        job = api.submit(fields, idempotency_key)
        if not (wait or follow):
            click.echo(to_json(job) if as_json else job["id"])
            return
        code = wait_for_end(api, job["id"], follow=follow, as_json=as_json)
    sys.exit(code)


@click.command()
@JOB_ID
@click.option("-f", "--follow", is_flag=True, help="Print the output as it comes.")
@AS_JSON
@api_options
@reports_errors
def wait(job_id: int, follow: bool, as_json: bool, url: str, token: str | None) -> None:
    """Wait for a job to end; print its output; exit with its exit code (as submit --wait)."""
    if follow and as_json:
        raise click.UsageError("--follow prints the output: it does not go with --json")
    with connect(url, token) as api:
        code = wait_for_end(api, job_id, follow=follow, as_json=as_json)
    sys.exit(code)


@click.command(name="list")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("-q", "--queue", help="Only jobs of this queue.")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(1, 1000),
    help=f"At most this many jobs (default {DEFAULT_LIST_LIMIT}); with --all, per request.",
)
@click.option("--all", "all_pages", is_flag=True, help="Every matching job, page after page.")
@click.option(
    "--order",
    type=click.Choice(["desc", "asc"]),
    default="desc",
    show_default=True,
    help="desc: newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of the jobs.")
@api_options
@reports_errors
def list_jobs(
    state: str | None,
    queue: str | None,
    limit: int | None,
    all_pages: bool,
    order: str,
    as_json: bool,
    url: str,
    token: str | None,
) -> None:
    """List jobs: id, state, queue, priority, attempts, exit, age, command."""
    jobs: list[Job] = []
    with connect(url, token) as api:
        pages = api.pages(
            state=state,
            queue=queue,
            limit=limit or (None if all_pages else DEFAULT_LIST_LIMIT),
            order=order,
            follow_links=all_pages,
        )
        for page in pages:
            jobs.extend(page)
    if as_json:
        click.echo(to_json(jobs))
        return
    width = shutil.get_terminal_size((120, 24)).columns
    click.echo(job_table(jobs, width, dt.datetime.now(dt.UTC)))


@click.command()
@JOB_ID
@AS_JSON
@api_options
@reports_errors
def show(job_id: int, as_json: bool, url: str, token: str | None) -> None:
    """Show one job."""
    with connect(url, token) as api:
        job = api.job(job_id)
    click.echo(to_json(job) if as_json else job_details(job))


@click.command()
@JOB_ID
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@api_options
@reports_errors
def output(job_id: int, follow: bool, url: str, token: str | None) -> None:
    """Print a job's output (stdout and stderr, as they were interleaved)."""
    stderr = _text_stream("stderr")
    progress = Progress(
        stderr, job_id, enabled=follow and stderr.isatty(), shares_terminal=sys.stdout.isatty()
    )
    writer = OutputWriter(_binary_stream("stdout"), progress.note)
    with connect(url, token) as api:
        if not follow:
            writer.take(api.output(job_id))
            return
        Waiter(api, job_id, writer=writer, progress=progress).run()
        progress.clear()


@click.command()
@JOB_ID
@AS_JSON
@api_options
@reports_errors
def cancel(job_id: int, as_json: bool, url: str, token: str | None) -> None:
    """Cancel a job: at once if it waits, or stop its command (SIGTERM, then SIGKILL)."""
    with connect(url, token) as api:
        job = api.cancel(job_id)
    if as_json:
        click.echo(to_json(job))
    elif job["state"] == "cancelled":
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id} is being stopped (it was {job['state']})")


@click.command()
@JOB_ID
@AS_JSON
@api_options
@reports_errors
def retry(job_id: int, as_json: bool, url: str, token: str | None) -> None:
    """Queue a failed or cancelled job again."""
    with connect(url, token) as api:
        job = api.retry(job_id)
    click.echo(to_json(job) if as_json else f"job {job_id} {job['state']} again")


COMMANDS = (submit, wait, list_jobs, show, output, cancel, retry)


def add_commands(group: click.Group) -> None:
    from client.schedule_commands import schedule

    for command in COMMANDS:
        group.add_command(command)
    group.add_command(schedule)
