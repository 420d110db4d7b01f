"""The server side of the `jobrunner` command: the process roles and the token store.

Imported by jobrunner.cli only when one of these commands runs, so that the client commands
load nothing of the server (no SQLAlchemy, Dramatiq, Redis, uvicorn, Starlette or yoyo).
"""

from __future__ import annotations

import os
import signal
import sys

import click
import sqlalchemy as sa
import structlog
import uvicorn
from sqlalchemy.engine import make_url

from service import logs
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
    check_job_user,
    check_namespace,
    wait_until_ready,
)
from service.scopes import Scope
from service.tokens import create_token, list_tokens, revoke_token
from service.web.server import server_options


def _settings() -> Settings:
    """The settings of a server role (or `token`): one line and exit 1 if they are not usable."""
    try:
        settings = Settings.from_environ()
        require_driver(settings.database_url)
    except (ConfigError, MissingDriver) as exc:
        raise click.ClickException(str(exc)) from None
    return settings


def _start_logs(settings: Settings, process: str) -> None:
    """Set up this role's logs; say where the database comes from if DATABASE_URL did not."""
    logs.configure(settings, process=process)
    if settings.database_url_from_link:
        structlog.get_logger("jobrunner").info(
            "DATABASE_URL is unset: using the docker-link variables MYSQL_PORT_3306_TCP_ADDR, "
            "MYSQL_PORT_3306_TCP_PORT, MYSQL_DATABASE_NAME, MYSQL_ENV_MYSQL_USER and "
            "MYSQL_ENV_MYSQL_PASSWORD, as the original did",
            database=make_url(settings.database_url).render_as_string(hide_password=True),
        )


def _ready(settings: Settings, checks: list[Check]) -> None:
    try:
        wait_until_ready(settings, checks)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None


def migrate() -> None:
    settings = _settings()
    _start_logs(settings, "release")
    try:
        applied = apply_migrations(settings.database_url)
    except Exception as exc:
        raise click.ClickException(f"migration failed: {exc}") from None
    click.echo(
        f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "")
    )


def web() -> None:
    settings = _settings()
    _start_logs(settings, "web")
    _ready(settings, [check_database, check_broker, check_namespace, check_auth])
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again: end with 0, a
    # clean stop for supervisors, instead of dying of it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        "service.web.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.web_concurrency,
        loop="uvloop",
        **server_options(settings),
    )


def worker() -> None:
    settings = _settings()
    _start_logs(settings, "worker")
    try:
        check_job_user(settings)  # no retry: waiting would not change it
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None
    _ready(settings, [check_database, check_broker, check_namespace])
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
    if settings.callbacks_enabled:
        # the callback sender: a process of its own beside the workers (restarted if it dies),
        # so that deliveries never cost a job's claim (actors/sender.py)
        argv += ["--fork-function", "actors.sender:supervise"]
    env = dict(os.environ)
    # A busy process takes no more messages than it has threads: the rest stay in Redis for
    # idle workers elsewhere. (An idle consumer blocks on Redis: see actors.consumer.)
    env.setdefault("dramatiq_queue_prefetch", str(settings.worker_threads))
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)


def _engine() -> sa.Engine:
    settings = _settings()
    try:
        check_database(settings)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None
    return create_engine(settings.database_url, pool_size=1, max_overflow=0)


def token_create(name: str, scope: str) -> None:
    engine = _engine()
    try:
        value = create_token(engine, name, Scope(scope))
    except (ValueError, JobRunnerError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(value)
    click.echo(f"token {name!r} ({scope}) created; it is not shown again", err=True)


def token_list() -> None:
    engine = _engine()
    try:
        tokens = list_tokens(engine)
    finally:
        engine.dispose()
    for info in tokens:
        click.echo(f"{info.name}\t{info.scope}\t{info.created_at:%Y-%m-%dT%H:%M:%SZ}")


def token_revoke(name: str) -> None:
    engine = _engine()
    try:
        revoke_token(engine, name)
    except JobRunnerError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(f"token {name!r} revoked", err=True)
