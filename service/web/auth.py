"""Checking requests: every path but the public ones needs `Authorization: Bearer <token>`.

Authentication only: the middleware finds which token a request carries, and grants the
request that token's scope (service.web.access.grant); each route then checks the scope its
method needs (service.web.access.ScopedRoute). A missing or unknown token is a 401 here.

The web keeps the digests of the tokens in the database in memory and reads them again every
few seconds: a revoked token stops working within `TOKEN_REFRESH_S`. Digests are compared in
constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Collection

import structlog
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import DatabaseUnavailable
from service.scopes import Scope as TokenScope
from service.tokens import digest, env_digests, stored_digests
from service.web.access import grant

log = structlog.get_logger(__name__)

TOKEN_REFRESH_S = 5.0


class TokenStore:
    """The digests of every valid token with their scopes, the database's refreshed every
    TOKEN_REFRESH_S."""

    def __init__(self, engine: Engine, env_tokens: tuple[str, ...]) -> None:
        self.engine = engine
        self.env_digests = env_digests(env_tokens)
        self.stored: dict[str, TokenScope] = {}
        self.known = dict(self.env_digests)
        self.read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self.read_at < TOKEN_REFRESH_S:
                return
            try:
                self.stored = await run_in_threadpool(stored_digests, self.engine)
                # a token both in the environment and in the database: the environment's scope
                self.known = self.stored | self.env_digests
                self.read_at = time.monotonic()
            except DatabaseUnavailable:
                # keep the last known tokens: an outage must not lock everybody out
                log.warning("could not read the API tokens; using the last ones read")

    async def digests(self) -> dict[str, TokenScope]:
        """The digests of every valid token, with their scopes (read again when stale)."""
        if time.monotonic() - self.read_at >= TOKEN_REFRESH_S:
            await self._refresh()
        return self.known

    async def scope_of(self, token: str) -> TokenScope | None:
        """The scope of this token, None if it is not a valid one."""
        if time.monotonic() - self.read_at >= TOKEN_REFRESH_S:
            await self._refresh()
        candidate = digest(token)
        found: TokenScope | None = None
        for known, scope in self.known.items():  # no early exit: the same time whatever matches
            if hmac.compare_digest(candidate, known):
                found = scope
        return found


def _bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class BearerAuth:
    """Pure ASGI middleware: every path but `public` needs `Authorization: Bearer <token>`;
    with no store (authentication off) every request is granted `admin`. Under the prefix
    `signed_in` (the dashboard's pages), a request without the header goes on ungranted: the
    dashboard's session grants it its scope, or its pages send the browser to sign in."""

    def __init__(
        self,
        app: ASGIApp,
        store_of: Callable[[Scope], TokenStore | None],
        public: Collection[str],
        signed_in: str | None = None,
    ) -> None:
        self.app = app
        self.store_of = store_of
        self.public = frozenset(public)
        self.signed_in = signed_in

    def _by_session(self, scope: Scope) -> bool:
        path: str = scope["path"]
        prefix = self.signed_in
        return prefix is not None and (path == prefix or path.startswith(prefix + "/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)  # the lifespan scope, above all, goes through
            return
        store = self.store_of(scope)
        if store is None:
            grant(scope, TokenScope.ADMIN)
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        token = _bearer_token(headers)
        if "authorization" not in headers and self._by_session(scope):
            await self.app(scope, receive, send)
            return
        if token is None:
            response = _unauthorized("missing bearer token: send Authorization: Bearer <token>")
        elif (token_scope := await store.scope_of(token)) is None:
            response = _unauthorized("invalid token", error_code="invalid_token")
        else:
            grant(scope, token_scope)
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
