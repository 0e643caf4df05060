"""The link's own flow control for incoming messages: stop reading while too many wait for a PUBACK.

The broker should never send more QoS 1 messages than the Receive Maximum of CONNECT (MQTT 5)
before the gateway's PUBACKs, but mosquitto 2.0.11 gives back two of its send quota for each
PUBACK, and MQTT 3.1.1 has no such limit at all. So the link counts what it handed on and has not
acknowledged, and past `receive_maximum` messages (or `bytes_max` of payload) it takes its socket
off the event loop: the rest waits in the broker and in TCP's window, not in the daemon's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.logs import get_logger

_log = get_logger("mqtt")

HELD_BYTES_MAX = 16 * 1024 * 1024


class ReadGate:
    """Counts unacknowledged incoming messages; pauses and resumes reading one socket."""

    def __init__(self, receive_maximum: int, bytes_max: int = HELD_BYTES_MAX) -> None:
        self._limit = receive_maximum
        self._bytes_max = bytes_max
        self._held = 0
        self._held_bytes = 0
        self.paused = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._readable: Callable[[], None] | None = None

    def attach(
        self, loop: asyncio.AbstractEventLoop, fd: int, readable: Callable[[], None]
    ) -> None:
        """Watch `fd` for reading with `readable`, unless paused (then on resume)."""
        self._loop, self._fd, self._readable = loop, fd, readable
        if not self.paused:
            loop.add_reader(fd, readable)

    def detach(self) -> None:
        """The socket is closed: stop watching it (the caller removes its reader)."""
        self._loop, self._fd, self._readable = None, -1, None

    def took(self, size_b: int) -> None:
        """A QoS 1 message of `size_b` payload bytes was handed on: pause if that is enough."""
        self._held += 1
        self._held_bytes += size_b
        if not self.paused and self._enough():
            self.paused = True
            if self._loop is not None and self._fd >= 0:
                self._loop.remove_reader(self._fd)
            _log.debug("mqtt_reading_paused", held=self._held, held_bytes=self._held_bytes)

    def gave(self, size_b: int) -> None:
        """A message of `size_b` bytes was acknowledged: resume reading once below the limits."""
        self._held = max(0, self._held - 1)
        self._held_bytes = max(0, self._held_bytes - size_b)
        if not self.paused or self._enough():
            return
        self.paused = False
        loop, fd, readable = self._loop, self._fd, self._readable
        if loop is None or fd < 0 or readable is None:
            return
        loop.add_reader(fd, readable)
        # Bytes already read but not yet parsed are never reported by the selector again.
        loop.call_soon(readable)
        _log.debug("mqtt_reading_resumed", held=self._held, held_bytes=self._held_bytes)

    def _enough(self) -> bool:
        return self._held >= self._limit or self._held_bytes >= self._bytes_max
