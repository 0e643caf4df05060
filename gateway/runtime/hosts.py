"""Which `Host` headers the gateway's HTTP server answers: a defence against DNS rebinding.

A web page at `evil.example` can re-point its own name at 127.0.0.1 or at the gateway's address;
the browser then treats the gateway as `evil.example` and lets the page read it and post to it.
What the browser cannot change is the `Host` header: it names `evil.example`. The server answers
only names it knows (the listen address, `localhost`, the machine's own names, `[console] hosts`)
and IP addresses of this machine, and refuses everything else with 421 before any route runs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - compared, not bound
_CHECKED_MAX = 256


class HostAllowList:
    """Host names and addresses a request may name; `allows` is called once per request."""

    def __init__(self, listen_host: str, extra: Iterable[str] = ()) -> None:
        names = set(LOOPBACK_NAMES)
        for name in (listen_host, *extra, *_own_names()):
            normal = _normal(name)
            if normal not in _WILDCARDS:
                names.add(normal)
        self._names = frozenset(names)
        self._checked: dict[str, bool] = {}

    @property
    def names(self) -> frozenset[str]:
        """The names and address literals allowed outright (addresses of the machine also pass)."""
        return self._names

    def allows(self, host_header: str | None) -> bool:
        """Whether a request with this `Host` header (None when absent) is for this server."""
        if host_header is None:
            return True  # HTTP/1.0 tools; a browser always sends Host
        host = host_of(host_header)
        if host is None:
            return False
        if host in self._names:
            return True
        return self._is_own_address(host)

    def _is_own_address(self, host: str) -> bool:
        # An IP literal is not a rebinding vector (no attacker's name in it) but keep to the
        # machine's own addresses anyway: they may change with DHCP, so ask the kernel, once.
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        known = self._checked.get(host)
        if known is None:
            known = ip.is_loopback or (
                not ip.is_unspecified and not ip.is_multicast and _can_bind(ip)
            )
            if len(self._checked) >= _CHECKED_MAX:
                self._checked.clear()
            self._checked[host] = known
        return known


def host_of(host_header: str) -> str | None:
    """The lower-case host named by a `Host` header, without port or brackets; None if malformed."""
    text = host_header.strip()
    allowed = "-."
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        text, allowed = inside, ":."
    else:
        name, colon, port = text.rpartition(":")
        if colon:
            if not port.isdigit():
                return None
            text = name
    normal = _normal(text)
    if not normal.isascii() or not all(ch.isalnum() or ch in allowed for ch in normal):
        return None
    return normal or None


def _normal(name: str) -> str:
    text = name.strip().strip("[]").lower().rstrip(".")
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(text))
    return text


def _own_names() -> set[str]:
    # The host name only: no DNS (getfqdn, getaddrinfo) at start, which can stall for seconds on
    # a dock that is offline. The machine's addresses pass by the bind probe; a full name or an
    # alias goes in `[console] hosts`.
    name = socket.gethostname()
    return {name, name.partition(".")[0]}


def _can_bind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    family = socket.AF_INET6 if isinstance(ip, ipaddress.IPv6Address) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False  # EADDRNOTAVAIL: not an address of this machine
    return True
