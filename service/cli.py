"""The `jobrunner` command: the process roles of the Procfile, and the release step.

jobrunner migrate    apply the schema migrations (the `release` role)
jobrunner web        the HTTP service (uvicorn)
jobrunner worker     the Dramatiq workers that run the jobs
jobrunner dev        both in one process, on SQLite (to try it, or develop: no MySQL, no Redis)
jobrunner            the role named by RUN_MODE (web/http_server, worker/delayed_job, release)

and the client commands of the API (submit, wait, list, show, output, cancel, retry: see
service/client_cli.py).
"""

from __future__ import annotations

import os
import signal
import sys

import click
import sqlalchemy as sa
import uvicorn

from service import logs
from service.auth import create_token, list_tokens, revoke_token
from service.client_cli import add_commands as add_client_commands
from service.config import ConfigError, Settings
from service.db import MissingDriver, create_engine, require_driver
from service.errors import JobRunnerError
from service.migrate import apply_migrations
from service.preflight import (
    Check,
    StartupError,
    check_auth,
    check_broker,
    check_database,
    wait_until_ready,
)

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


def _settings() -> Settings:
    """The settings of a server role (or `token`): one line and exit 1 if they are not usable."""
    try:
        settings = Settings.from_environ()
        require_driver(settings.database_url)
    except (ConfigError, MissingDriver) as exc:
        raise click.ClickException(str(exc)) from None
    return settings


def _ready(settings: Settings, checks: list[Check]) -> None:
    try:
        wait_until_ready(settings, checks)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None


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
    settings = _settings()
    logs.configure(settings, process="release")
    try:
        applied = apply_migrations(settings.database_url)
    except Exception as exc:
        raise click.ClickException(f"migration failed: {exc}") from None
    click.echo(
        f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "")
    )


@main.command()
def web() -> None:
    """Serve the HTTP API (uvicorn; WEB_CONCURRENCY processes on HOST:PORT)."""
    settings = _settings()
    logs.configure(settings, process="web")
    _ready(settings, [check_database, check_broker, check_auth])
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again: end with 0, a
    # clean stop for supervisors, instead of dying of it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.web_concurrency,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@main.command()
def worker() -> None:
    """Run the Dramatiq workers (WORKER_PROCESSES x WORKER_THREADS jobs at once)."""
    settings = _settings()
    logs.configure(settings, process="worker")
    _ready(settings, [check_database, check_broker])
    shutdown_ms = int((settings.shutdown_grace + settings.kill_grace + 15) * 1000)
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "actors.worker",
        "--processes",
        str(settings.worker_processes),
        "--threads",
        str(settings.worker_threads),
        "--worker-shutdown-timeout",
        str(shutdown_ms),
    ]
    if settings.worker_queues:
        argv += ["--queues", *settings.worker_queues]
    env = dict(os.environ)
    # A busy process takes no more messages than it has threads: the rest stay in Redis for
    # idle workers elsewhere. (An idle consumer blocks on Redis: see actors.broker.)
    env.setdefault("dramatiq_queue_prefetch", str(settings.worker_threads))
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)


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
    from service import dev as dev_mode  # the web and worker stacks: not for client commands

    try:
        dev_mode.run(db, host, port)
    except dev_mode.DevError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def token() -> None:
    """Manage the API tokens kept in the database (as SHA-256 digests only)."""


def _engine() -> sa.Engine:
    settings = _settings()
    try:
        check_database(settings)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None
    return create_engine(settings.database_url, pool_size=1, max_overflow=0)


@token.command("create")
@click.argument("name")
def token_create(name: str) -> None:
    """Create a token named NAME and print it: the only time it is shown."""
    engine = _engine()
    try:
        value = create_token(engine, name)
    except (ValueError, JobRunnerError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(value)
    click.echo(f"token {name!r} created; it is not shown again", err=True)


@token.command("list")
def token_list() -> None:
    """List the tokens' names and creation times (never the tokens)."""
    engine = _engine()
    try:
        tokens = list_tokens(engine)
    finally:
        engine.dispose()
    for info in tokens:
        click.echo(f"{info.name}\t{info.created_at:%Y-%m-%dT%H:%M:%SZ}")


@token.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Delete the token named NAME: it stops working within seconds."""
    engine = _engine()
    try:
        revoke_token(engine, name)
    except JobRunnerError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(f"token {name!r} revoked", err=True)


COMMANDS = {"web": web, "worker": worker, "migrate": migrate}
main.add_command(migrate, name="release")
add_client_commands(main)
