"""Signing in (with an API token) and out. A wrong token is refused with one message, whatever
was wrong with it; the form is protected against cross-site requests like every other."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.errors import JobRunnerError
from service.tokens import digest
from service.web.dashboard import csrf
from service.web.dashboard.render import page
from service.web.dashboard.session import (
    PREFIX,
    cookie_key,
    current,
    fingerprint,
    replace_session,
    signed_in,
)

WRONG_TOKEN = "That token is not valid."
HOME = f"{PREFIX}/jobs"


def _next(raw: str | None) -> str:
    """Where to go after signing in: a dashboard page of this site, nothing else."""
    if raw and raw.startswith(PREFIX + "/") and "//" not in raw and "\\" not in raw:
        return raw
    return HOME


async def sign_in_page(request: Request) -> Response:
    if request.method == "POST":
        return await sign_in(request)
    return page(
        request,
        "login.html",
        next=_next(request.query_params.get("next")),
        error=None,
        already=signed_in(request),
    )


async def sign_in(request: Request) -> Response:
    form = await csrf.read_form(request)
    target = _next(form.get("next"))
    try:
        csrf.check(request, form)
    except JobRunnerError as exc:
        return page(request, "login.html", 403, next=target, error=exc.message, already=False)
    services = request.state.services
    token = form.get("token", "").strip()
    scope = await services.tokens.scope_of(token) if token and services.tokens else None
    if scope is None:
        if services.tokens is None:  # authentication is off: nothing to sign in to
            return RedirectResponse(target, status_code=303)
        return page(request, "login.html", 401, next=target, error=WRONG_TOKEN, already=False)
    mark = fingerprint(cookie_key(request), digest(token))
    replace_session(request, current(request).signed_in(mark))
    return RedirectResponse(target, status_code=303)


async def sign_out(request: Request) -> Response:
    form = await csrf.read_form(request)
    csrf.check(request, form)
    replace_session(request, current(request).signed_out())
    return RedirectResponse(f"{PREFIX}/login", status_code=303)
