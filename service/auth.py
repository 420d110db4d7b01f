"""Bearer tokens: from `JOBRUNNER_API_TOKENS` and from the database (`jobrunner token`).

Only SHA-256 digests of tokens are kept (tokens are 256-bit random, so a plain digest is
enough), compared in constant time. The web keeps the digests from the database in memory and
reads them again every few seconds: a revoked token stops working within
`TOKEN_REFRESH_S`. No token, nor its digest, ever goes into a log line or a response.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.db import api_tokens, transaction, utcnow
from service.errors import Conflict, DatabaseUnavailable, NotFound

log = structlog.get_logger(__name__)

TOKEN_PREFIX = "jr_"
TOKEN_REFRESH_S = 5.0
#: paths served without a token: probes must work before anyone has one
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- tokens in the database ---------------------------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created_at: dt.datetime


def create_token(engine: Engine, name: str) -> str:
    """Store a new token under `name`; return the token (the only time it is seen)."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError("a token name is 1 to 100 letters, digits, and _.@-")
    token = generate_token()
    try:
        with transaction(engine) as conn:
            conn.execute(
                api_tokens.insert().values(name=name, token_hash=digest(token), created_at=utcnow())
            )
    except sa.exc.IntegrityError:
        raise Conflict(f"a token named {name!r} exists already") from None
    return token


def list_tokens(engine: Engine) -> list[TokenInfo]:
    with transaction(engine) as conn:
        rows = conn.execute(
            sa.select(api_tokens.c.name, api_tokens.c.created_at).order_by(api_tokens.c.name)
        ).all()
    return [TokenInfo(row.name, row.created_at) for row in rows]


def revoke_token(engine: Engine, name: str) -> None:
    with transaction(engine) as conn:
        result = conn.execute(api_tokens.delete().where(api_tokens.c.name == name))
    if result.rowcount != 1:
        raise NotFound(f"no token named {name!r}")


def _stored_digests(engine: Engine) -> frozenset[str]:
    with transaction(engine) as conn:
        return frozenset(conn.execute(sa.select(api_tokens.c.token_hash)).scalars())


def has_any_token(engine: Engine, env_tokens: tuple[str, ...]) -> bool:
    return bool(env_tokens) or bool(_stored_digests(engine))


def is_stored(engine: Engine, token: str) -> bool:
    """Whether the database holds this token (by its digest)."""
    return digest(token) in _stored_digests(engine)


# --- checking requests --------------------------------------------------------------------


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
                self.stored = await run_in_threadpool(_stored_digests, self.engine)
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
