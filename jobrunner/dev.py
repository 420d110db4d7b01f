"""`jobrunner dev`: the web and a worker in one process, on a SQLite file and an in-process broker.

For a first try and for development: nothing to install but the package (no MySQL, no Redis, no
compiler). It runs the same code as production (routes, claims, sweeper, monitor, runner), with
Dramatiq's StubBroker shared by the web and the worker instead of Redis. Production runs
`jobrunner web` and `jobrunner worker` on MySQL and Redis.

- Jobs left queued when it stops run at the next start: the broker's messages die with the
  process, and the sweeper sends them again from the database (as after a Redis outage).
- Jobs left running by a dev process that was killed become `worker lost` one lease timeout
  after the next start (then retried or failed, as their `max_retries` says); the orphans of
  their commands are killed at start by the worker's reaper. The lease is shorter here (see
  DEV_LEASE_TIMEOUT).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio
import dramatiq
import structlog
import uvicorn
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.bootstrap import build
from actors.context import WorkerContext, worker_name
from actors.sender import Sender
from service import logs
from service.config import ConfigError, Settings
from service.db import create_engine
from service.errors import NotFound
from service.migrate import apply_migrations
from service.tokens import create_token, is_stored, revoke_token
from service.web.app import create_app
from service.web.server import server_options

log = structlog.get_logger(__name__)

STUB_BROKER_URL = "stub:"
#: The lease timeout unless JOBRUNNER_LEASE_TIMEOUT says otherwise (production: 15 s). One dev
#: process serves its database, and its database is a local file: no other live worker can be
#: taken for lost, and there is no database outage to ride out. What a long lease would cost
#: here is the wait, after a killed dev process is started again, before its jobs left
#: `running` are retried or failed (the sweeper first watches the database for a whole lease).
DEV_LEASE_TIMEOUT = 10.0
TOKEN_NAME = "dev"
TRY_COMMAND = "echo hello; sleep 1; echo world"


class DevError(RuntimeError):
    """`jobrunner dev` cannot start; the message says why, in one line."""


def dev_settings(db: Path, host: str, port: int, env: Mapping[str, str]) -> Settings:
    """The settings from the environment, on the SQLite file `db` and the in-process broker."""
    for name in ("DATABASE_URL", "REDIS_URL"):
        if env.get(name, "").strip():
            raise DevError(
                f"jobrunner dev runs on SQLite and an in-process broker: unset {name} "
                "(a MySQL and Redis set-up runs `jobrunner web` and `jobrunner worker`)"
            )
    overrides = {
        "DATABASE_URL": f"sqlite:///{db}",
        "REDIS_URL": STUB_BROKER_URL,
        "HOST": host,
        "PORT": str(port or 1),  # port 0 (any free port) is filled in once bound
    }
    try:
        settings = Settings.from_environ({**env, **overrides})
    except ConfigError as exc:
        raise DevError(str(exc)) from None
    if not env.get("JOBRUNNER_LEASE_TIMEOUT", "").strip():
        lease = max(DEV_LEASE_TIMEOUT, settings.heartbeat_interval * 3)
        settings = dataclasses.replace(settings, lease_timeout=lease)
    return settings


def listen(host: str, port: int) -> socket.socket:
    """A bound socket for the web, so that a port in use is one clear line before anything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DevError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another with --port)"
        ) from None
    return sock


def local_token(engine: Engine, token_file: Path) -> str:
    """The token kept in `token_file` if the database knows it; else a new one, named `dev`,
    written there (mode 600) in place of the old one."""
    with contextlib.suppress(FileNotFoundError):
        token = token_file.read_text().strip()
        if token and is_stored(engine, token):
            return token
    with contextlib.suppress(NotFound):
        revoke_token(engine, TOKEN_NAME)
    token = create_token(engine, TOKEN_NAME)
    token_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


class InProcessWorker:
    """A Dramatiq worker in this process: threads that run jobs, plus the monitor and the
    sweeper (started and stopped by the lifecycle middleware, as in a worker process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ctx: WorkerContext = build(settings, name=worker_name(dev=True))
        dramatiq.set_broker(self.ctx.broker)
        self.worker = dramatiq.Worker(
            self.ctx.broker,
            queues=set(settings.worker_queues) or None,
            worker_threads=settings.worker_threads,
            worker_timeout=100,
        )
        # as `jobrunner worker`: no more messages held than threads, the rest stay queued
        self.worker.queue_prefetch = settings.worker_threads
        self.sender = Sender(settings, self.ctx.engine) if settings.callbacks_enabled else None
        self.started = False

    def start(self) -> None:
        self.worker.start()
        if self.sender is not None:
            self.sender.start()
        self.started = True

    def stop(self) -> None:
        """Take no new job; give running ones JOBRUNNER_SHUTDOWN_GRACE seconds, then stop
        them and hand their jobs back to the queue (they run at the next start)."""
        if not self.started:
            return
        self.started = False
        settings = self.settings
        timeout_s = settings.shutdown_grace + settings.kill_grace + 15
        self.worker.stop(timeout=int(timeout_s * 1000))
        if self.sender is not None:
            self.sender.stop()

    def hurry(self) -> None:
        """End the grace now: running jobs are stopped and handed back at once."""
        self.ctx.shutdown_deadline = time.monotonic()


class WithWorker:
    """The web app, whose lifespan also starts the worker (once the web is set up) and stops it
    (before the web lets go of its engine). A second Ctrl-C while it stops ends the grace."""

    def __init__(self, app: ASGIApp, worker: InProcessWorker, hurried: Callable[[], bool]):
        self.app = app
        self.worker = worker
        self.hurried = hurried

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def receive_and_stop() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self._stop_worker()
            return message

        async def send_and_start(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                await anyio.to_thread.run_sync(self.worker.start)
            await send(message)

        await self.app(scope, receive_and_stop, send_and_start)

    async def _stop_worker(self) -> None:
        running = len(self.worker.ctx.running)
        if running:
            log.info(
                "running jobs get the grace to finish, then go back to the queue "
                "(Ctrl-C again: at once)",
                running=running,
                grace=self.worker.settings.shutdown_grace,
            )

        async def hurry_on_second_signal() -> None:
            while not self.hurried():
                await anyio.sleep(0.1)
            self.worker.hurry()

        async with anyio.create_task_group() as group:
            group.start_soon(hurry_on_second_signal)
            await anyio.to_thread.run_sync(self.worker.stop)
            group.cancel_scope.cancel()


def banner(settings: Settings, db: Path, url: str, token: str | None, token_file: Path) -> str:
    """What `jobrunner dev` prints before it serves: where things are, and how to try it."""
    lines = [
        f"jobrunner dev: {url}  (database {db}, jobs run in {settings.job_home})",
        "For trying and development; production runs `jobrunner web` and `jobrunner worker` "
        "on MySQL and Redis.",
        "",
        f"dashboard: {url}/ui"
        + ("  (sign in with the API token below)" if settings.auth_enabled else ""),
    ]
    data = f"--data-urlencode 'job[command]={TRY_COMMAND}'"
    if token is not None:
        lines += [
            f"API token (also in {token_file}): {token}",
            f"try:  curl -H 'Authorization: Bearer {token}' {url}/jobs {data}",
            f"or:   JOBRUNNER_URL={url} JOBRUNNER_TOKEN={token} "
            f"jobrunner submit --wait --follow --shell '{TRY_COMMAND}'",
        ]
    elif not settings.auth_enabled:
        lines += [
            "Authentication is OFF (JOBRUNNER_AUTH=off).",
            f"try:  curl {url}/jobs {data}",
        ]
    else:
        lines += [
            "Tokens come from JOBRUNNER_API_TOKENS.",
            f"try:  curl -H 'Authorization: Bearer <token>' {url}/jobs {data}",
        ]
    return "\n".join([*lines, ""])


def run(db: str, host: str, port: int, env: Mapping[str, str] | None = None) -> None:
    """Serve the API and run jobs in this process until Ctrl-C (or SIGTERM)."""
    env = os.environ if env is None else env
    db_path = Path(db).expanduser().resolve()
    settings = dev_settings(db_path, host, port, env)
    logs.configure(settings, process="dev")
    sock = listen(settings.host, port)
    bound_port = sock.getsockname()[1]
    settings = dataclasses.replace(settings, port=bound_port)
    try:
        apply_migrations(settings.database_url)
    except Exception as exc:
        sock.close()
        raise DevError(f"cannot set up the database {db_path}: {exc}") from None

    token_file = db_path.parent / ".jobrunner" / "dev-token"
    token = None
    if settings.auth_enabled and not settings.api_tokens:
        engine = create_engine(settings.database_url, pool_size=1, max_overflow=0)
        try:
            token = local_token(engine, token_file)
        finally:
            engine.dispose()

    worker = InProcessWorker(settings)
    app = create_app(settings, dispatcher=worker.ctx.dispatcher)
    logs.configure(settings, process="dev")  # create_app set up the web's logging
    server: uvicorn.Server | None = None
    config = uvicorn.Config(
        WithWorker(app, worker, hurried=lambda: server is not None and server.force_exit),
        lifespan="on",
        **server_options(settings),
    )
    server = uvicorn.Server(config)
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    url = f"http://{shown_host}:{bound_port}"
    print(banner(settings, db_path, url, token, token_file), flush=True)  # noqa: T201
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises Ctrl-C again once stopped
        server.run(sockets=[sock])
    if worker.started:  # a second Ctrl-C came before the web's shutdown: uvicorn skipped it
        worker.hurry()
        worker.stop()
