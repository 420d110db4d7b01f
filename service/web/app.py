"""The web application: `create_app()` builds routes, error handlers and the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs
from service.broker import make_broker
from service.config import Settings
from service.db import create_engine
from service.deployment import with_namespace
from service.dispatch import Dispatcher, dispatcher_for
from service.errors import JobRunnerError, ValidationFailed
from service.metrics import RECORDER, Flusher
from service.preflight import check_auth
from service.queue_names import QueueNames
from service.web.access import check_declared, public_paths
from service.web.auth import BearerAuth, TokenStore
from service.web.dashboard import PREFIX as DASHBOARD
from service.web.dashboard import DashboardSessions, with_pages
from service.web.dashboard import routes as dashboard_routes
from service.web.follow import OutputHub
from service.web.guard import ServedHosts, UnauthenticatedGuard
from service.web.routes import Services, routes
from service.web.server import ANSWERED_BY_SERVER
from service.web.submit import Submitter
from service.workers import NamedQueues

log = structlog.get_logger("service.http")

WEB_POOL_SIZE = 20
WEB_POOL_OVERFLOW = 10


async def _job_runner_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JobRunnerError)
    if isinstance(exc, ValidationFailed):
        return JSONResponse(exc.errors, status_code=422)
    headers = {"Retry-After": "5"} if exc.status_code == 503 else None
    if exc.status_code >= 500:
        log.warning("service unavailable", error=exc.message, cause=repr(exc.__cause__))
    return JSONResponse({"error": exc.message}, status_code=exc.status_code, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 else "not found"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "internal server error"}, status_code=500)


class RequestLog:
    """One structured line per request: method, path, status, duration, and the job it
    concerns with the state it moved it to (the client-side job transitions)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            duration = time.perf_counter() - started
            state = scope.get("state") or {}
            status = state.get(ANSWERED_BY_SERVER, status)  # a 408 of service.web.server
            route = getattr(scope.get("route"), "path", "other")
            RECORDER.count("jobrunner_http_requests", route, scope["method"], str(status))
            RECORDER.observe(
                "jobrunner_http_request_duration_seconds", duration, route, scope["method"]
            )
            fields: dict[str, Any] = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round(duration * 1000, 2),
            }
            for name in ("job_id", "job_state"):  # a job it created or moved, and its state
                if name in state:
                    fields[name] = state[name]
            log.info("request", **fields)


def _end_streams_on_exit_signals(hub: OutputHub) -> None:
    """On SIGTERM/SIGINT, end the follow streams at once, so that uvicorn's graceful shutdown
    (which waits for open responses) does not wait for jobs to finish."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(sig: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(hub.close)
            if callable(previous):
                previous(sig, frame)

        signal.signal(signum, handler)


def _token_store(scope: Scope) -> TokenStore | None:
    services: Services = scope["state"]["services"]
    return services.tokens


def create_app(
    settings: Settings | None = None, *, dispatcher: Dispatcher | None = None
) -> Starlette:
    """The ASGI app; uvicorn calls it as a factory (`--factory`) in each web process.

    `dispatcher`: the one of an in-process worker to share (`jobrunner dev`: one StubBroker for
    the web and the worker); by default the app makes its own broker, and closes it at the end.
    """
    settings = settings or Settings.from_environ()
    logs.configure(settings, process="web")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        engine = create_engine(
            settings.database_url, pool_size=WEB_POOL_SIZE, max_overflow=WEB_POOL_OVERFLOW
        )
        # no more threads than database connections: a request never waits for the pool
        anyio.to_thread.current_default_thread_limiter().total_tokens = (
            WEB_POOL_SIZE + WEB_POOL_OVERFLOW
        )
        if settings.auth_enabled:
            check_auth(settings)  # raises when no token exists at all
            tokens = TokenStore(engine, settings.api_tokens)
        else:
            tokens = None
            log.warning(
                "authentication is OFF (JOBRUNNER_AUTH=off): anyone who can reach this port "
                "can run commands",
                served_hosts=",".join(ServedHosts.of(settings.host, settings.allowed_hosts).names),
            )
        named = NamedQueues(engine, settings.lease_timeout)
        own = with_namespace(settings, engine)  # this deployment's Redis namespace
        shared = dispatcher or dispatcher_for(make_broker(own), own, named)
        hub = OutputHub(shared)
        await hub.start()
        _end_streams_on_exit_signals(hub)
        RECORDER.use_bus(shared.bus)
        flusher = Flusher()
        flusher.start()
        submitter = Submitter(engine, shared)
        submitter.start()
        services = Services(
            settings=settings,
            engine=engine,
            broker=shared.broker,
            dispatcher=shared,
            tokens=tokens,
            policy=settings.command_policy,
            hub=hub,
            submitter=submitter,
            queues=QueueNames(engine, settings),
        )
        try:
            yield {"services": services}
        finally:
            submitter.stop()
            flusher.stop()
            await hub.stop()
            if dispatcher is None:
                shared.broker.close()
            engine.dispose()

    served_routes = [*routes, *dashboard_routes]  # the API's, and the dashboard's pages
    check_declared(served_routes)  # every route says which token scope it needs
    public = public_paths(served_routes)
    middleware = [
        Middleware(RequestLog),
        Middleware(BearerAuth, store_of=_token_store, public=public, signed_in=DASHBOARD),
        Middleware(DashboardSessions, settings=settings),
    ]
    if not settings.auth_enabled:
        served = ServedHosts.of(settings.host, settings.allowed_hosts)
        middleware.append(Middleware(UnauthenticatedGuard, served=served, public=public))
    return Starlette(
        routes=served_routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers=with_pages(
            {
                JobRunnerError: _job_runner_error,
                HTTPException: _http_error,
                Exception: _server_error,
            }
        ),
    )
