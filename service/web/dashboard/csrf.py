"""Cross-site request forgery: every dashboard form that changes something carries the
session's CSRF token in a hidden field, and its request must not come from another site's page
(`Origin`, `Sec-Fetch-Site`: service.web.guard). The session cookie is `SameSite=Strict` as
well; the token and the Origin check hold even for a browser that ignores that.

A request with a valid bearer token (a script) needs neither: a page of another site cannot
make a browser send that header.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.requests import Request

from service.errors import ApiError
from service.web import forms
from service.web.bodies import read_body
from service.web.dashboard.session import by_bearer, current
from service.web.guard import cross_site_reason

FIELD = "csrf_token"


class CrossSiteRefused(ApiError):
    """This form was not sent by this dashboard's own page: reload the page and try again."""

    status_code = 403


async def read_form(request: Request) -> dict[str, str]:
    """A form's fields (urlencoded or multipart, strictly UTF-8: service.web.forms), the last
    value of a repeated name."""
    body = await read_body(request, request.state.services.settings.max_body_size)
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        return dict(forms.multipart(body, content_type))
    return dict(forms.urlencoded(body))


def check(request: Request, form: Mapping[str, str]) -> None:
    """Raise CrossSiteRefused unless the request comes from this dashboard's own form."""
    if by_bearer(request):
        return
    reason = cross_site_reason(request.headers, request.headers.get("host", ""), request.url.scheme)
    if reason is not None:
        raise CrossSiteRefused(f"cross-site request refused ({reason})")
    sent = form.get(FIELD, "")
    if not hmac.compare_digest(sent.encode(errors="replace"), current(request).csrf.encode()):
        raise CrossSiteRefused()
