"""Errors on the dashboard's paths: a page for people (a browser asks for HTML), the API's
JSON for everything else; a page that needs a session the browser has not got sends it to
sign in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.errors import JobRunnerError, ValidationFailed
from service.web.access import OutsideScope, granted
from service.web.dashboard.render import page
from service.web.dashboard.session import PREFIX, is_page

Handler = Callable[[Request, Exception], Awaitable[Response]]


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _message(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, ValidationFailed):
        details = "; ".join(f"{name} {' '.join(m)}" for name, m in exc.errors.items())
        return exc.status_code, details
    if isinstance(exc, JobRunnerError):
        return exc.status_code, exc.message
    if isinstance(exc, HTTPException):
        return exc.status_code, "not found" if exc.status_code == 404 else str(exc.detail)
    return 500, "internal server error"


async def error_page(request: Request, exc: Exception, fallback: Handler) -> Response:
    if isinstance(exc, OutsideScope) and granted(request.scope) is None:
        if request.method in ("GET", "HEAD"):  # not signed in: sign in, then come back
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(
                f"{PREFIX}/login?next={quote(target, safe='/')}", status_code=303
            )
    if not _wants_html(request):
        return await fallback(request, exc)
    status, message = _message(exc)
    return page(request, "error.html", status, status=status, message=message)


def with_pages(handlers: Mapping[Any, Handler]) -> dict[Any, Handler]:
    """The app's exception handlers, answering with pages on the dashboard's paths."""

    def wrap(fallback: Handler) -> Handler:
        async def handler(request: Request, exc: Exception) -> Response:
            if is_page(request.url.path):
                return await error_page(request, exc, fallback)
            return await fallback(request, exc)

        return handler

    return {kind: wrap(handler) for kind, handler in handlers.items()}
