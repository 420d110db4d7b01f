"""The checks that stand in for authentication when it is off (service.web.guard)."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from service.web.guard import ServedHosts, cross_site_reason, same_origin


@pytest.mark.parametrize(
    ("listen", "allowed", "host", "served"),
    [
        ("127.0.0.1", (), "127.0.0.1:8000", True),
        ("127.0.0.1", (), "localhost:8000", True),
        ("127.0.0.1", (), "[::1]:8000", True),
        ("127.0.0.1", (), "127.0.0.2", True),  # loopback, never a rebinding
        ("127.0.0.1", (), "evil.example:8000", False),
        ("127.0.0.1", (), "localhost.evil.example", False),
        ("127.0.0.1", (), "192.168.1.5:8000", False),  # not where it listens
        ("0.0.0.0", (), "192.168.1.5:8000", True),  # every address of the machine
        ("0.0.0.0", (), "web:8000", False),  # a name must be listed
        ("0.0.0.0", ("web",), "WEB:8000", True),
        ("127.0.0.1", ("*.corp.example",), "jobs.corp.example", True),
        ("127.0.0.1", ("*.corp.example",), "corp.example.evil", False),
        ("127.0.0.1", ("*",), "anything", True),
        ("jobs.lan", (), "jobs.lan:80", True),
        ("127.0.0.1", (), "", False),
    ],
)
def test_served_hosts(listen: str, allowed: tuple[str, ...], host: str, served: bool) -> None:
    assert ServedHosts.of(listen, allowed).allow(host) is served


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://localhost", "localhost:80", True),
        ("https://jobs.lan", "jobs.lan", False),  # an https page, a plain-http server
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("null", "127.0.0.1:8000", False),
        ("http://evil.example", "127.0.0.1:8000", False),
        ("http://127.0.0.1:99999", "127.0.0.1:8000", False),
    ],
)
def test_same_origin(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host, "http") is same


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({}, False),  # curl, httpx, the CLI
        ({"sec-fetch-site": "same-origin", "origin": "http://h:1"}, False),
        ({"sec-fetch-site": "none"}, False),  # typed into the address bar
        ({"sec-fetch-site": "cross-site"}, True),
        ({"sec-fetch-site": "same-site"}, True),  # another port of localhost
        ({"origin": "http://other:1"}, True),
    ],
)
def test_cross_site_reason(headers: dict[str, str], refused: bool) -> None:
    assert (cross_site_reason(Headers(headers), "h:1", "http") is not None) is refused
