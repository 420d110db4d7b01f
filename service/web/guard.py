"""What stands in for authentication when it is off (`JOBRUNNER_AUTH=off`, the laptop case).

Without tokens, anyone who can make the user's browser send a request could run a command: a
web page the user visits can POST a form to `http://localhost:8000/jobs` (no CORS preflight for
form content types), and a DNS-rebinding page can even read the answers, its own host name
pointing at 127.0.0.1. Two checks close both:

- **Host**: the request's `Host` must name the address the server listens on, loopback, or a
  name listed in `JOBRUNNER_ALLOWED_HOSTS` (`*.example.com` for subdomains, `*` for any): a
  rebinding page's requests carry its own name, so they get 400.
- **Cross-site**: a request that changes something (any method but GET, HEAD, OPTIONS) is
  refused with 403 when the browser says it comes from another site: `Sec-Fetch-Site` other
  than `same-origin` or `none`, or an `Origin` that is not this server's. Scripts and CI
  (curl, httpx, the CLI) send neither header and are served as before.

The probes skip the Host check: orchestrators probe by address. With authentication on, none
of this applies: a bearer token is a header that a cross-site page cannot make a browser send.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})
DEFAULT_PORTS = {"http": "80", "https": "443"}


@dataclass(frozen=True)
class ServedHosts:
    """The host names and addresses a server without authentication answers to: loopback,
    the address it listens on (any address of the machine when that is 0.0.0.0 or ::; an
    address in `Host` is never a rebinding, whose pages carry a name), and the operator's."""

    names: tuple[str, ...]
    any_address: bool

    @classmethod
    def of(cls, listen_host: str, allowed: Iterable[str]) -> ServedHosts:
        listen = listen_host.lower()
        names = [*LOOPBACK_NAMES, *(name.lower() for name in allowed)]
        if listen not in WILDCARD_ADDRESSES:
            names.append(listen)
        return cls(tuple(dict.fromkeys(names)), any_address=listen in WILDCARD_ADDRESSES)

    def allow(self, host: str) -> bool:
        name, _ = _split_host(host)
        if not name:
            return False
        for pattern in self.names:
            if pattern == "*" or name == pattern:
                return True
            if pattern.startswith("*.") and name.endswith(pattern[1:]):
                return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return address.is_loopback or self.any_address


def _split_host(host: str) -> tuple[str, str]:
    """`name:port` (or `[v6]:port`) → (name, port); the port is "" when absent."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest.removeprefix(":")
    if host.count(":") > 1:  # a bare IPv6 address, no port
        return host, ""
    name, _, port = host.partition(":")
    return name, port


def _origin_authority(origin: str) -> str | None:
    """`scheme://host[:port]` → `host:port` with the scheme's default port made explicit."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    try:
        port = parts.port
    except ValueError:
        return None
    return f"{name}:{port or DEFAULT_PORTS[parts.scheme]}"


def same_origin(origin: str, host: str, scheme: str) -> bool:
    """Whether an `Origin` header names the server that the `Host` header names."""
    authority = _origin_authority(origin)
    if authority is None:
        return False
    name, port = _split_host(host)
    name = f"[{name}]" if ":" in name else name
    return authority == f"{name}:{port or DEFAULT_PORTS.get(scheme, '80')}"


def cross_site_reason(headers: Headers, host: str, scheme: str) -> str | None:
    """Why a browser sent this request from another site, or None when it did not."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in SAME_SITE_FETCHES:
        return f"Sec-Fetch-Site: {fetch_site}"
    origin = headers.get("origin")
    if origin is not None and not same_origin(origin, host, scheme):
        return f"Origin: {origin}"
    return None


class UnauthenticatedGuard:
    """Pure ASGI middleware for a server without authentication: the Host and cross-site
    checks of the module docstring."""

    def __init__(self, app: ASGIApp, served: ServedHosts, public: frozenset[str]) -> None:
        self.app = app
        self.served = served
        self.public = public  # the probes: no Host check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not self.served.allow(host):
            response = JSONResponse(
                {
                    "error": f"this server does not answer to the host {host!r} without "
                    "authentication: use its address, or list the name in "
                    "JOBRUNNER_ALLOWED_HOSTS"
                },
                status_code=400,
            )
        elif scope["method"] not in SAFE_METHODS and (
            reason := cross_site_reason(headers, host, scope.get("scheme", "http"))
        ):
            response = JSONResponse(
                {
                    "error": f"cross-site request refused ({reason}): without authentication "
                    "this server only takes changes from scripts and from its own pages"
                },
                status_code=403,
            )
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
