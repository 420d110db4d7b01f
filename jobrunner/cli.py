"""The `jobrunner` command: the process roles of the Procfile, and the release step.

jobrunner migrate    apply the schema migrations (the `release` role)
jobrunner web        the HTTP service (uvicorn)
jobrunner worker     the Dramatiq workers that run the jobs
jobrunner dev        both in one process, on SQLite (to try it, or develop: no MySQL, no Redis)
jobrunner            the role named by RUN_MODE (web/http_server, worker/delayed_job, release)

and the client commands of the API (submit, wait, list, show, output, cancel, retry: see
client/commands.py). The client commands load only the client (httpx); a server command
imports its side (jobrunner.roles, jobrunner.dev) when it runs.
"""

from __future__ import annotations

import os

import click

from client.commands import add_commands as add_client_commands

#: the SQLite file of `jobrunner dev` (gitignored: *.sqlite3)
DEV_DB = "jobrunner-dev.sqlite3"
RUN_MODES = {
    "web": "web",
    "http_server": "web",
    "worker": "worker",
    "delayed_job": "worker",
    "release": "migrate",
    "migrate": "migrate",
}


@click.group(invoke_without_command=True)
@click.pass_context
def main(ctx: click.Context) -> None:
    """HTTP Job Runner: run a command asynchronously because an HTTP request asked for it."""
    if ctx.invoked_subcommand is not None:
        return
    mode = os.environ.get("RUN_MODE", "").strip()
    if not mode:
        click.echo(ctx.get_help())
        return
    if mode not in RUN_MODES:
        raise click.ClickException(
            f"RUN_MODE={mode!r} is not one of: {', '.join(sorted(RUN_MODES))}"
        )
    ctx.invoke(COMMANDS[RUN_MODES[mode]])


@main.command()
def migrate() -> None:
    """Create the database if needed and apply the migrations (safe to run again)."""
    from jobrunner import roles

    roles.migrate()


@main.command()
def web() -> None:
    """Serve the HTTP API (uvicorn; WEB_CONCURRENCY processes on HOST:PORT)."""
    from jobrunner import roles

    roles.web()


@main.command()
def worker() -> None:
    """Run the Dramatiq workers (WORKER_PROCESSES x WORKER_THREADS jobs at once)."""
    from jobrunner import roles

    roles.worker()


@main.command()
@click.option(
    "--db",
    default=DEV_DB,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The SQLite file (created if missing).",
)
@click.option("--host", envvar="HOST", default="127.0.0.1", show_default=True)
@click.option(
    "--port", envvar="PORT", default=8000, show_default=True, type=click.IntRange(0, 65535)
)
def dev(db: str, host: str, port: int) -> None:
    """Try it here: the web and a worker in one process, on SQLite (no MySQL, no Redis).

    For trying and development; production runs `web` and `worker` on MySQL and Redis.
    Commands run in JOB_HOME (default: the current folder). Ctrl-C stops it; jobs still
    queued then run at the next start.
    """
    from jobrunner import dev as dev_mode

    try:
        dev_mode.run(db, host, port)
    except dev_mode.DevError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def token() -> None:
    """Manage the API tokens kept in the database (as SHA-256 digests only)."""


@token.command("create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(["read", "submit", "admin"]),
    default="admin",
    show_default=True,
    help="read: GET only; submit: also create, cancel and retry jobs; admin: everything.",
)
def token_create(name: str, scope: str) -> None:
    """Create a token named NAME and print it: the only time it is shown."""
    from jobrunner import roles

    roles.token_create(name, scope)


@token.command("list")
def token_list() -> None:
    """List the tokens' names, scopes and creation times (never the tokens)."""
    from jobrunner import roles

    roles.token_list()


@token.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Delete the token named NAME: it stops working within seconds."""
    from jobrunner import roles

    roles.token_revoke(name)


COMMANDS = {"web": web, "worker": worker, "migrate": migrate}
main.add_command(migrate, name="release")
add_client_commands(main)
