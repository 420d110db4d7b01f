"""Rendering the pages: Starlette's Jinja2Templates, autoescaped, and the filters they use."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from service.db import utcnow
from service.scopes import Scope
from service.states import FINAL
from service.web.access import granted
from service.web.dashboard import assets
from service.web.dashboard.session import csrf_token
from service.web.schemas import format_time

TEMPLATES = Path(__file__).parent / "templates"


def duration(seconds: float | None) -> str:
    """`1h 02m`, `3m 05s`, `4.2s`, `120ms`: the length of a wait or a run, for people."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def between(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None:
        return None
    return ((end or utcnow()) - start).total_seconds()


def ago(value: dt.datetime | None) -> str:
    """`5m 02s ago`, `in 3.0s`."""
    if value is None:
        return ""
    seconds = (utcnow() - value).total_seconds()
    return f"{duration(seconds)} ago" if seconds >= 0 else f"in {duration(-seconds)}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name: job commands and output are text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(iso=format_time, ago=ago, duration=duration)
    env.globals.update(between=between, asset=assets.url, final_states=FINAL, Scope=Scope)
    return env


templates = Jinja2Templates(env=_environment())


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    """A page, with what every page shows: who is signed in, what they may do, the CSRF token."""
    scope = granted(request.scope)
    base = {
        "scope": scope,
        "can_submit": scope is not None and scope.allows(Scope.SUBMIT),
        "csrf": csrf_token(request),
        "auth_enabled": request.state.services.settings.auth_enabled,
    }
    return templates.TemplateResponse(request, name, base | context, status_code=status_code)
