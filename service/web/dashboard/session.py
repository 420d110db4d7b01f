"""The dashboard's session: a signed cookie, and what it grants.

A browser signs in once with an API token (service.web.dashboard.account); afterwards its
session cookie stands for the token. The cookie holds no token and no token digest: it holds
a keyed fingerprint of the token's digest (HMAC with the session key), and a random CSRF
token. Each request finds the token again among the valid ones (service.web.auth.TokenStore),
so the session has the token's current scope, and stops working within seconds when the
token is revoked. A browser that has not signed in has an anonymous session too: its CSRF
token protects the sign-in form.

The cookie is signed and timed with itsdangerous (`URLSafeTimedSerializer`), `HttpOnly`,
`SameSite=Strict`, `Secure` over HTTPS, and expires `session_max_age` seconds after sign-in.
The key is `JOBRUNNER_SESSION_SECRET`, or else the deployment's own (made at random by the
migrations, table `web_secrets`), so every web process of a deployment accepts every other's
cookies.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import queries
from service.config import Settings
from service.db import transaction
from service.scopes import Scope as TokenScope
from service.web.access import grant, granted
from service.web.auth import TokenStore

PREFIX = "/ui"
STATIC_PREFIX = f"{PREFIX}/static/"
COOKIE = "jobrunner_session"
SALT = "jobrunner.dashboard.session"
_STATE = "dashboard_session"
_BEARER = "dashboard_bearer"
_KEY = "dashboard_key"

#: every page: no script, style or frame from anywhere but this server, none inline
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@dataclass(frozen=True)
class Session:
    """One browser's session: its CSRF token, and the fingerprint of the token it signed in
    with (None: not signed in)."""

    csrf: str
    token: str | None = None
    #: True when the cookie must be (re)sent: new, signed in, signed out
    changed: bool = False

    @classmethod
    def anonymous(cls) -> Session:
        return cls(csrf=secrets.token_urlsafe(32), changed=True)

    def signed_in(self, fingerprint: str) -> Session:
        """A new session for this token: a new CSRF token too (no fixation)."""
        return Session(csrf=secrets.token_urlsafe(32), token=fingerprint, changed=True)

    def signed_out(self) -> Session:
        return Session.anonymous()


def is_page(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def fingerprint(key: bytes, token_digest: str) -> str:
    """What the cookie holds for a token: its digest, keyed, so the cookie reveals nothing."""
    return hmac.new(key, token_digest.encode(), hashlib.sha256).hexdigest()


def session_key(settings: Settings, engine: Engine) -> bytes:
    """The key that signs cookies: the operator's, else the deployment's own."""
    if settings.session_secret:
        return settings.session_secret.encode()
    with transaction(engine) as conn:
        stored = queries.web_secret(conn, "session")
    if stored is None:
        raise RuntimeError("this database has no session secret: run `jobrunner migrate`")
    return stored.encode()


class Cookies:
    """Signs and reads session cookies."""

    def __init__(self, key: bytes, max_age: float) -> None:
        self.key = key
        self.max_age = max_age
        self._serializer = URLSafeTimedSerializer(key, salt=SALT)

    def load(self, raw: str | None) -> Session | None:
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=int(self.max_age))
        except BadSignature:  # a bad signature, or expired (SignatureExpired)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        token = data.get("t")
        return Session(csrf=data["c"], token=token if isinstance(token, str) else None)

    def header(self, session: Session, secure: bool) -> str:
        value = self._serializer.dumps({"c": session.csrf, "t": session.token})
        parts = [
            f"{COOKIE}={value}",
            f"Path={PREFIX}",
            f"Max-Age={int(self.max_age)}",
            "HttpOnly",
            "SameSite=Strict",
        ]
        if secure:
            parts.append("Secure")
        return "; ".join(parts)


async def scope_of(store: TokenStore, key: bytes, session: Session) -> TokenScope | None:
    """The scope of the token this session signed in with; None if it is no longer valid."""
    if session.token is None:
        return None
    found: TokenScope | None = None
    for token_digest, scope in (await store.digests()).items():  # no early exit
        if hmac.compare_digest(fingerprint(key, token_digest), session.token):
            found = scope
    return found


def current(request: Request) -> Session:
    """The session of a dashboard request."""
    session: Session = request.scope["state"][_STATE]
    return session


def csrf_token(request: Request) -> str:
    """The session's CSRF token, for a page's forms ("" on a request no session reached)."""
    session = request.scope.get("state", {}).get(_STATE)
    return session.csrf if isinstance(session, Session) else ""


def replace_session(request: Request, session: Session) -> None:
    """Sign in or out: the response carries the new cookie."""
    request.scope["state"][_STATE] = replace(session, changed=True)


def cookie_key(request: Request) -> bytes:
    """The key that signs this deployment's session cookies."""
    key: bytes = request.scope["state"][_KEY]
    return key


def by_bearer(request: Request) -> bool:
    """The request carried a valid bearer token (a script): no cookie, so no CSRF."""
    return bool(request.scope["state"].get(_BEARER))


def signed_in(request: Request) -> bool:
    return granted(request.scope) is not None


class DashboardSessions:
    """Pure ASGI middleware for the dashboard's paths: read the session cookie and grant the
    request its token's scope; send the cookie back when it changed; add the pages' security
    headers. Runs inside service.web.auth.BearerAuth."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._cookies: Cookies | None = None

    async def _cookie_jar(self, scope: Scope) -> Cookies:
        if self._cookies is None:
            engine = scope["state"]["services"].engine
            key = await run_in_threadpool(session_key, self.settings, engine)
            self._cookies = Cookies(key, self.settings.session_max_age)
        return self._cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page(scope["path"]):
            await self.app(scope, receive, send)
            return
        cookies = await self._cookie_jar(scope)
        request = Request(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        session = cookies.load(request.cookies.get(COOKIE)) or Session.anonymous()
        store: TokenStore | None = state["services"].tokens
        if granted(scope) is not None:
            state[_BEARER] = store is not None  # auth is on: BearerAuth checked a token
        elif store is not None and (found := await scope_of(store, cookies.key, session)):
            grant(scope, found)
        state[_STATE] = session
        state[_KEY] = cookies.key
        secure = scope.get("scheme") == "https"
        static = scope["path"].startswith(STATIC_PREFIX)  # cacheable: no cookie on it

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("cache-control", "no-store")
                final: Session = state[_STATE]
                if final.changed and not state.get(_BEARER) and not static:
                    headers.append("set-cookie", cookies.header(final, secure))
            await send(message)

        await self.app(scope, receive, send_with_headers)
