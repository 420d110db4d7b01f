"""Which token scope each route needs: declared by the route itself, checked before it runs.

Every route of the app is a `ScopedRoute`, whose every method names what a request needs: a
token scope (`Scope.READ`, `Scope.SUBMIT`, `Scope.ADMIN`: service.scopes) or `PUBLIC` (no token
at all: the probes). A mounted app is a `ScopedMount`, with one scope for all of it. This is the
only way to add a route: `create_app` refuses to start with one that declares nothing
(`check_declared`), so a route cannot be left open by mistake, and tests/inprocess/
test_scopes.py tries every declared route with every scope too small for it.

Whatever authenticates a request (service.web.auth for bearer tokens; a dashboard's session)
grants it its scope with `grant`. A route refuses a request outside its scope with 403 before
its endpoint runs: nothing is read from the body, nothing changes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from service.errors import ApiError
from service.scopes import Scope

PUBLIC: Literal["public"] = "public"
#: what a route's method needs: a token scope, or nothing at all
Need = Scope | Literal["public"]
Endpoint = Callable[[Request], Awaitable[Response]]
_GRANTED = "token_scope"


class OutsideScope(ApiError):
    """This token's scope does not allow this request."""

    status_code = 403


def grant(scope: AsgiScope, token_scope: Scope) -> None:
    """Give a request (its ASGI scope) the scope of the token or session it came with."""
    scope.setdefault("state", {})[_GRANTED] = token_scope


def granted(scope: AsgiScope) -> Scope | None:
    """The scope a request was granted; None if nothing authenticated it."""
    value = scope.get("state", {}).get(_GRANTED)
    return value if isinstance(value, Scope) else None


def authorize(scope: AsgiScope, need: Need) -> None:
    """Raise OutsideScope (403) unless the request may do what needs `need`."""
    if not isinstance(need, Scope):  # PUBLIC
        return
    have = granted(scope)
    if have is None or not have.allows(need):
        raise OutsideScope(
            f"{scope.get('method', '')} {scope.get('path', '')} needs a token of scope "
            f"{need.value} or more; this one is {have.value if have else 'none'}"
        )


class ScopedRoute(Route):
    """A route whose every method declares what it needs:
    `ScopedRoute("/jobs", GET=(Scope.READ, list_jobs), POST=(Scope.SUBMIT, create_job))`.
    One endpoint serves all its methods, so that a 405 lists every allowed one; HEAD is GET's.
    """

    def __init__(self, path: str, **methods: tuple[Need, Endpoint]) -> None:
        if not methods:
            raise ValueError(f"route {path} serves no method")
        self.needs: dict[str, Need] = {method: need for method, (need, _) in methods.items()}
        handlers = {method: endpoint for method, (_, endpoint) in methods.items()}
        needs = self.needs

        async def endpoint(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            authorize(request.scope, needs[method])
            return await handlers[method](request)

        super().__init__(path, endpoint, methods=list(methods))


class ScopedMount(Mount):
    """A mounted app (static files, a sub-application) whose every request needs `need`."""

    def __init__(self, path: str, app: ASGIApp, need: Need, name: str | None = None) -> None:
        self.need = need

        async def guarded(scope: AsgiScope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                authorize(scope, need)
            await app(scope, receive, send)

        super().__init__(path, app=guarded, name=name)


def undeclared(routes: Iterable[BaseRoute]) -> list[str]:
    """The paths of the routes that declare no scope (a plain Route, Mount, WebSocketRoute)."""
    missing: list[str] = []
    for route in routes:
        if isinstance(route, ScopedRoute | ScopedMount):
            continue
        if isinstance(route, Mount) and route.routes:
            missing += [route.path + path for path in undeclared(route.routes)]
            continue
        missing.append(getattr(route, "path", repr(route)))
    return missing


def check_declared(routes: Iterable[BaseRoute]) -> None:
    """Refuse routes that do not say which scope they need (the app will not start)."""
    missing = undeclared(routes)
    if missing:
        raise TypeError(
            f"routes that declare no token scope: {', '.join(missing)}; build them as "
            "service.web.access.ScopedRoute (or ScopedMount), naming each method's scope"
        )


def public_paths(routes: Iterable[BaseRoute]) -> frozenset[str]:
    """The paths a request may reach with no token (every method of the route PUBLIC)."""
    paths = set()
    for route in routes:
        if isinstance(route, ScopedRoute) and set(route.needs.values()) == {PUBLIC}:
            if "{" in route.path:
                raise ValueError(f"a public route has no path parameters: {route.path}")
            paths.add(route.path)
    return frozenset(paths)


def declared_needs(routes: Iterable[BaseRoute]) -> tuple[tuple[str, str, Need], ...]:
    """(path as OpenAPI writes it, method, need) of every route, but the `.json` twins of
    other routes (`/jobs.json`)."""
    scoped = [route for route in routes if isinstance(route, ScopedRoute)]
    paths = {route.path for route in scoped}
    found = []
    for route in scoped:
        if route.path.endswith(".json") and route.path.removesuffix(".json") in paths:
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        found += [(path, method.lower(), need) for method, need in route.needs.items()]
    return tuple(found)
