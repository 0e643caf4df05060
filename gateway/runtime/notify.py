"""systemd's sd_notify, spoken directly on $NOTIFY_SOCKET (no libsystemd needed)."""

from __future__ import annotations

import os
import socket


class SystemdNotifier:
    """Sends READY/WATCHDOG/STATUS/STOPPING datagrams; a no-op when not run by systemd."""

    def __init__(self, address: str | None = None) -> None:
        self._address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """Whether systemd (or a test) listens."""
        return bool(self._address)

    def watchdog_interval_s(self) -> float | None:
        """Half of WATCHDOG_USEC when systemd set it for this process, else None."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` lines in one datagram; False when it could not be delivered."""
        if not self._address:
            return False
        address = self._address
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), address)
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
