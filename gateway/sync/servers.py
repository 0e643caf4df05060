"""The brokers of `[mqtt] servers`, tried in turn; pure, so the failover order needs no sockets.

Every failure (a refused or timed-out connect, a lost link) moves on to the next server. The backoff
grows per full round of failures, not per attempt: the nodes of a cluster are tried at the shortest
delay one after the other, and only a cluster that is down as a whole is retried ever more slowly,
so one unreachable node never causes a reconnect storm and never delays the move to a live one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ServerRing:
    """Which server to try next, and whether a connection is a failover to another one."""

    endpoints: tuple[tuple[str, int], ...]
    _index: int = 0
    _last_connected: tuple[str, int] | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.endpoints:
            msg = "at least one server"
            raise ValueError(msg)

    @property
    def current(self) -> tuple[str, int]:
        """The server the next connect goes to."""
        return self.endpoints[self._index]

    def backoff_attempt(self, failures: int) -> int:
        """The backoff attempt after `failures` failures in a row: full rounds of the list."""
        return failures // len(self.endpoints)

    def failed(self) -> None:
        """The current server failed (or its link was lost): the next one is tried next."""
        self._index = (self._index + 1) % len(self.endpoints)

    def connected(self) -> bool:
        """Note a connection to the current server; True when it is a failover to another one."""
        failover = self._last_connected is not None and self._last_connected != self.current
        self._last_connected = self.current
        return failover


def server_name(endpoint: tuple[str, int]) -> str:
    """`host:port` (an IPv6 host in brackets)."""
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
