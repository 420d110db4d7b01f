"""Checking requests: every path but the probes needs `Authorization: Bearer <token>`.

The web keeps the digests of the tokens in the database in memory and reads them again every
few seconds: a revoked token stops working within `TOKEN_REFRESH_S`. Digests are compared in
constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable

import structlog
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import DatabaseUnavailable
from service.tokens import digest, stored_digests

log = structlog.get_logger(__name__)

TOKEN_REFRESH_S = 5.0
#: paths served without a token: probes must work before anyone has one
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class TokenStore:
    """The digests of every valid token, the database's refreshed every TOKEN_REFRESH_S."""

    def __init__(self, engine: Engine, env_tokens: tuple[str, ...]) -> None:
        self.engine = engine
        self.env_digests = frozenset(digest(token) for token in env_tokens)
        self.stored: frozenset[str] = frozenset()
        self.known = self.env_digests
        self.read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self.read_at < TOKEN_REFRESH_S:
                return
            try:
                self.stored = await run_in_threadpool(stored_digests, self.engine)
                self.known = self.env_digests | self.stored
                self.read_at = time.monotonic()
            except DatabaseUnavailable:
                # keep the last known tokens: an outage must not lock everybody out
                log.warning("could not read the API tokens; using the last ones read")

    async def accepts(self, token: str) -> bool:
        if time.monotonic() - self.read_at >= TOKEN_REFRESH_S:
            await self._refresh()
        candidate = digest(token)
        matched = False
        for known in self.known:  # no early exit: the same time whatever matches
            matched |= hmac.compare_digest(candidate, known)
        return matched


def _bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class BearerAuth:
    """Pure ASGI middleware: every path but OPEN_PATHS needs `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, store_of: Callable[[Scope], TokenStore | None]) -> None:
        self.app = app
        self.store_of = store_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)  # the lifespan scope, above all, goes through
            return
        store = self.store_of(scope)
        if store is None:
            await self.app(scope, receive, send)
            return
        token = _bearer_token(Headers(scope=scope))
        if token is None:
            response = _unauthorized("missing bearer token: send Authorization: Bearer <token>")
        elif not await store.accepts(token):
            response = _unauthorized("invalid token", error_code="invalid_token")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


def _unauthorized(message: str, error_code: str | None = None) -> JSONResponse:
    challenge = 'Bearer realm="jobrunner"'
    if error_code:
        challenge += f', error="{error_code}"'
    return JSONResponse(
        {"error": message}, status_code=401, headers={"WWW-Authenticate": challenge}
    )
