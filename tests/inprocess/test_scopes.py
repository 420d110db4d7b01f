"""Token scopes (API.md section 9) on every route the app has: a token outside a route's scope
gets 403 `{"error": ...}` and changes nothing; inside it, it gets what the route does. The
routes are read from the app itself, so a route added later is tried too, and a route that
declares no scope stops the app from being built at all."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from service.config import Settings
from service.scopes import Scope
from service.web.access import (
    PUBLIC,
    OutsideScope,
    ScopedMount,
    ScopedRoute,
    check_declared,
    grant,
    undeclared,
)
from service.web.app import create_app
from service.web.routes import routes
from tests.support import TEST_TOKEN, Api

NAMES = itertools.count()
TOKENS = {Scope.READ: "jr_read-only", Scope.SUBMIT: "jr_submitter", Scope.ADMIN: TEST_TOKEN}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The tier's settings with a token of each scope (the bare one is admin)."""
    entries = (TEST_TOKEN, f"read:{TOKENS[Scope.READ]}", f"submit:{TOKENS[Scope.SUBMIT]}")
    return dataclasses.replace(settings, api_tokens=entries)


#: a body that the route would accept, for the methods that take one
BODIES = {
    "POST /jobs": {"command": "true"},
    "POST /jobs.json": {"command": "true"},
    "PUT": {"priority": 3},
    "PATCH": {"priority": 4},
    "PATCH /schedules/{schedule_id:int}": {"every": 120},
}


def _cases(app_routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(method, path, need) of every method of every route the app serves (HEAD too), those
    of mounted apps too (as a GET of the mount)."""
    for route in app_routes:
        if isinstance(route, ScopedMount):
            yield "GET", f"{prefix}{route.path}/", route.need
        elif isinstance(route, Mount):
            yield from _cases(route.routes, prefix + route.path)
        else:
            assert isinstance(route, ScopedRoute), route  # else create_app refused it
            for method, need in route.needs.items():
                yield method, prefix + route.path, need
                if method == "GET":
                    yield "HEAD", prefix + route.path, need


#: the routes of this module; the tests below try those of the app they run on
CASES = list(_cases(routes))


def _snapshot(engine: sa.Engine) -> list[Any]:
    with engine.begin() as conn:
        return [tuple(row) for row in conn.execute(sa.text("SELECT * FROM jobs ORDER BY id"))]


def _call(client: TestClient, method: str, path: str, token: str | None, job_id: int) -> Any:
    url = re.sub(r"\{\w+(:\w+)?\}", str(job_id), path)  # a 403 comes before any lookup
    body = BODIES.get(f"{method} {path}") or BODIES.get(method)
    if (method, path) == ("POST", "/schedules"):  # a name of its own each time
        body = {"name": f"scoped-{next(NAMES)}", "every": 60, "job": {"command": "true"}}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request(method, url, json=body, headers=headers)


def test_a_token_outside_the_scope_gets_403_and_changes_nothing(
    app_client: TestClient, api: Api, engine: sa.Engine
) -> None:
    job = api.submit(command="true", queue="scoped")
    before = _snapshot(engine)
    refused = 0
    for method, path, need in _cases(app_client.app.routes):  # type: ignore[attr-defined]
        if need == PUBLIC:
            status = _call(app_client, method, path, None, job["id"]).status_code
            if method in ("GET", "HEAD"):
                assert status == 200, (method, path)
            else:  # the dashboard's sign-in and sign-out: a form without its CSRF token
                assert status == 403, (method, path)
            continue
        for scope, token in TOKENS.items():
            if scope.allows(need):
                continue
            response = _call(app_client, method, path, token, job["id"])
            assert response.status_code == 403, (method, path, scope, response.text)
            if method != "HEAD":
                error = response.json()["error"]
                assert need.value in error and scope.value in error, error
            assert _snapshot(engine) == before, (method, path, scope)
            refused += 1
    assert refused >= 10  # read: every write; submit: edits and deletes


def test_a_token_of_the_scope_or_more_is_served(app_client: TestClient, api: Api) -> None:
    for method, path, need in _cases(app_client.app.routes):  # type: ignore[attr-defined]
        if need == PUBLIC:
            continue
        for scope, token in TOKENS.items():
            if not scope.allows(need):
                continue
            job = api.submit(command="true", queue="scoped")  # a fresh one: DELETE takes it
            if path.endswith("/retry"):
                api.http.post(f"/jobs/{job['id']}/cancel")  # only a cancelled job may retry
            target = job["id"]
            if "{schedule_id" in path:  # a fresh schedule too
                body = {"name": f"scoped-{next(NAMES)}", "every": 60, "job": {"command": "true"}}
                target = api.http.post("/schedules", json=body).json()["id"]
            response = _call(app_client, method, path, token, target)
            assert response.status_code not in (401, 403), (scope, method, path, response.text)
            if (method, path, need) in CASES:  # the job routes: served, whatever the scope
                assert response.status_code < 300, (scope, method, path, response.text)


def test_the_scopes_are_those_of_api_md() -> None:
    needs = {(m, p): n for m, p, n in CASES}
    assert needs[("GET", "/jobs")] == Scope.READ
    assert needs[("POST", "/jobs")] == Scope.SUBMIT
    assert needs[("POST", "/jobs/{job_id:int}/cancel")] == Scope.SUBMIT
    assert needs[("POST", "/jobs/{job_id:int}/retry")] == Scope.SUBMIT
    for method in ("PUT", "PATCH", "DELETE"):
        assert needs[(method, "/jobs/{job_id:int}")] == Scope.ADMIN
    assert needs[("GET", "/healthz")] == needs[("GET", "/readyz")] == PUBLIC


def test_every_route_of_the_app_declares_its_scope(settings: Settings) -> None:
    assert undeclared(create_app(settings).routes) == []


async def _ok(request: Request) -> Response:
    return PlainTextResponse("ok")


def test_a_route_that_declares_no_scope_stops_the_app(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a later route would, added the plain Starlette way."""
    plain = [Route("/schedules", _ok), Mount("/ui", routes=[Route("/jobs", _ok)])]
    assert undeclared(plain) == ["/schedules", "/ui/jobs"]
    with pytest.raises(TypeError, match="/schedules"):
        check_declared(plain)
    monkeypatch.setattr("service.web.app.routes", [*routes, plain[0]])
    with pytest.raises(TypeError, match="/schedules"):
        create_app(settings)


def test_a_scoped_mount_guards_all_it_serves() -> None:
    async def grant_from_header(scope: Any, receive: Any, send: Any) -> None:
        wanted = dict(scope.get("headers", [])).get(b"x-scope")
        if wanted:
            grant(scope, Scope(wanted.decode()))
        await app(scope, receive, send)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OutsideScope)
        return PlainTextResponse(exc.message, status_code=exc.status_code)

    app = Starlette(
        routes=[ScopedMount("/ui", app=PlainTextResponse("page"), need=Scope.SUBMIT)],
        exception_handlers={OutsideScope: refused},
    )
    check_declared(app.routes)
    with TestClient(grant_from_header) as client:
        assert client.get("/ui/x", headers={"x-scope": "submit"}).text == "page"
        assert client.get("/ui/x", headers={"x-scope": "admin"}).text == "page"
        assert client.get("/ui/x", headers={"x-scope": "read"}).status_code == 403
        assert client.get("/ui/x").status_code == 403
