"""API tokens: from `JOBRUNNER_API_TOKENS` and in the database (`jobrunner token`).

Only SHA-256 digests of tokens are kept (tokens are 256-bit random, so a plain digest is
enough), each with its scope (service.scopes). The web checks requests against them
(service.web.auth). No token, nor its digest, ever goes into a log line or a response.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service.db import api_tokens, transaction, utcnow
from service.errors import Conflict, NotFound
from service.scopes import DEFAULT_SCOPE, Scope, parse_entry

TOKEN_PREFIX = "jr_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- tokens in the database ---------------------------------------------------------------


def env_digests(entries: tuple[str, ...]) -> dict[str, Scope]:
    """The digests of the tokens of JOBRUNNER_API_TOKENS, with their scopes."""
    scoped = (parse_entry(entry) for entry in entries)
    return {digest(token): scope for scope, token in scoped}


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created_at: dt.datetime
    scope: Scope


def create_token(engine: Engine, name: str, scope: Scope = DEFAULT_SCOPE) -> str:
    """Store a new token under `name`; return the token (the only time it is seen)."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError("a token name is 1 to 100 letters, digits, and _.@-")
    token = generate_token()
    try:
        with transaction(engine) as conn:
            conn.execute(
                api_tokens.insert().values(
                    name=name, token_hash=digest(token), created_at=utcnow(), scope=scope
                )
            )
    except sa.exc.IntegrityError:
        raise Conflict(f"a token named {name!r} exists already") from None
    return token


def list_tokens(engine: Engine) -> list[TokenInfo]:
    with transaction(engine) as conn:
        rows = conn.execute(
            sa.select(api_tokens.c.name, api_tokens.c.created_at, api_tokens.c.scope).order_by(
                api_tokens.c.name
            )
        ).all()
    return [TokenInfo(row.name, row.created_at, _scope(row.scope)) for row in rows]


def _scope(stored: str) -> Scope:
    """A stored scope; one this version does not know counts as the least (read)."""
    try:
        return Scope(stored)
    except ValueError:
        return Scope.READ


def revoke_token(engine: Engine, name: str) -> None:
    with transaction(engine) as conn:
        result = conn.execute(api_tokens.delete().where(api_tokens.c.name == name))
    if result.rowcount != 1:
        raise NotFound(f"no token named {name!r}")


def stored_digests(engine: Engine) -> dict[str, Scope]:
    """The digests of the tokens in the database, with their scopes."""
    with transaction(engine) as conn:
        rows = conn.execute(sa.select(api_tokens.c.token_hash, api_tokens.c.scope)).all()
    return {row.token_hash: _scope(row.scope) for row in rows}


def has_any_token(engine: Engine, env_tokens: tuple[str, ...]) -> bool:
    return bool(env_tokens) or bool(stored_digests(engine))


def is_stored(engine: Engine, token: str) -> bool:
    """Whether the database holds this token (by its digest)."""
    return digest(token) in stored_digests(engine)
