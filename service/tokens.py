"""API tokens: from `JOBRUNNER_API_TOKENS` and in the database (`jobrunner token`).

Only SHA-256 digests of tokens are kept (tokens are 256-bit random, so a plain digest is
enough). The web checks requests against them (service.web.auth). No token, nor its digest,
ever goes into a log line or a response.
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

TOKEN_PREFIX = "jr_"
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


def stored_digests(engine: Engine) -> frozenset[str]:
    with transaction(engine) as conn:
        return frozenset(conn.execute(sa.select(api_tokens.c.token_hash)).scalars())


def has_any_token(engine: Engine, env_tokens: tuple[str, ...]) -> bool:
    return bool(env_tokens) or bool(stored_digests(engine))


def is_stored(engine: Engine, token: str) -> bool:
    """Whether the database holds this token (by its digest)."""
    return digest(token) in stored_digests(engine)
