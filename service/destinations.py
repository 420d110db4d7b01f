"""Where completion callbacks may go (API.md section 8): http(s) URLs whose host is not in the
refused ranges (private, loopback, link-local, metadata, shared, reserved: anything not
globally routable), unless `JOBRUNNER_CALLBACK_ALLOW` lists it.

A host name is allowed as written, an address (or CIDR range) only for a URL that names an
address in it: `127.0.0.1` allows `http://127.0.0.1:8080/`, not `127.0.0.2` nor `localhost`.
Checked on create (`check_url`: what can be told without DNS) and again at each delivery after
resolution (`resolve`: every address a name resolves to must be global), so that a name that
later resolves inside is refused too, and the sender connects to the address it checked.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: host name, port -> the addresses it resolves to
Resolver = Callable[[str, int], Sequence[str]]
MAX_URL_LENGTH = 2048


class Refused(ValueError):
    """A callback URL, or the address it resolves to, may not be called."""


@dataclass(frozen=True)
class Target:
    """A checked callback URL, split into what the sender needs."""

    url: str
    scheme: str
    host: str  # lower case; an IPv6 address without its brackets
    port: int
    #: `scheme://host:port`: concurrency is bounded per destination
    destination: str
    literal: Address | None  # the host, when the URL names an address


def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _why_refused(address: Address) -> str | None:
    """Why an address is refused by default (None: it is globally routable)."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    for test, name in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local (cloud metadata)"),
        ("is_private", "private"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_reserved", "reserved"),
    ):
        if getattr(address, test):
            return name
    if not address.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class AllowList:
    """JOBRUNNER_CALLBACK_ALLOW: names allowed as written, addresses and ranges."""

    names: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[str]) -> AllowList:
        names: set[str] = set()
        networks: list[Network] = []
        for entry in entries:
            item = entry.strip().lower().strip("[]")
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                if "/" in item or not _is_host_name(item):
                    raise ValueError(
                        f"JOBRUNNER_CALLBACK_ALLOW: {entry!r} is not an address, a CIDR range "
                        "or a host name"
                    ) from None
                names.add(item.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows_address(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


def _is_host_name(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return all(
        0 < len(label) <= 63 and all(c.isalnum() or c == "-" for c in label) for label in labels
    )


def check_url(url: str, allow: AllowList) -> Target:
    """The URL, checked without DNS: http(s), a host, and not a refused address (nor a name
    of this machine such as `localhost`) unless allowed. Raises Refused."""
    if len(url) > MAX_URL_LENGTH:
        raise Refused(f"is too long (at most {MAX_URL_LENGTH} characters)")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise Refused("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused("must be an http or https URL")
    host = (parts.hostname or "").lower()
    if not host:
        raise Refused("must name a host")
    if parts.username is not None or parts.password is not None:
        raise Refused("must not carry a user name or password")
    port = port or (443 if scheme == "https" else 80)
    literal = _address(host)
    if literal is not None:
        why = _why_refused(literal)
        if why is not None and not allow.allows_address(literal):
            raise Refused(
                f"names a {why} address ({host}), refused unless JOBRUNNER_CALLBACK_ALLOW lists it"
            )
    else:
        if not _is_host_name(host):
            raise Refused("must name a valid host")
        name = host.rstrip(".")
        if (name == "localhost" or name.endswith(".localhost")) and name not in allow.names:
            raise Refused(
                f"names this machine ({host}), refused unless JOBRUNNER_CALLBACK_ALLOW lists it"
            )
    shown = f"[{host}]" if literal is not None and literal.version == 6 else host
    return Target(url, scheme, host, port, f"{scheme}://{shown}:{port}", literal)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def resolve(target: Target, allow: AllowList, resolver: Resolver = system_resolver) -> str:
    """The address to connect to for this delivery: the URL's own address, or the first that
    its name resolves to, every one of which must be global unless the name is allowed as
    written. Raises Refused (before any connection), or OSError when the name does not
    resolve."""
    if target.literal is not None:
        why = _why_refused(target.literal)
        if why is not None and not allow.allows_address(target.literal):
            raise Refused(f"refused: {target.host} is a {why} address")
        return target.host
    addresses = list(dict.fromkeys(resolver(target.host, target.port)))
    if not addresses:
        raise OSError(f"{target.host} resolves to no address")
    if target.host.rstrip(".") not in allow.names:
        for text in addresses:
            address = _address(text.split("%", 1)[0])
            why = "unparseable" if address is None else _why_refused(address)
            if why is not None:
                raise Refused(f"refused: {target.host} resolves to a {why} address ({text})")
    return addresses[0].split("%", 1)[0]
