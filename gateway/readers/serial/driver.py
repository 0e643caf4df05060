"""Serial scanners through pyserial (the one product module importing it), read on a thread.

pyserial blocks, so one thread per open port reads byte chunks and hands them to the loop through
the one thread bridge (`runtime/bridge.py`, at most `_QUEUE_CHUNKS` chunks): while it is full the
thread waits and stops reading the device, so a stalled consumer backs up into the OS buffer
instead of into memory. Framing, time stamping and counting happen on the loop. A read error
(unplugged USB device, closed pty -> EIO, closed socket), or the device path going away while
reads time out, ends the thread and makes `events()` raise ReaderUnavailable. Leaving `async with`
stops the thread within about a second (`cancel_read()` plus a short read timeout) and closes the
port; entering again reopens the path, so a replugged device (a udev by-id link that points at the
new node) comes back on the same driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self, cast

import serial

from gateway.domain.events import BarcodeScan
from gateway.errors import ReaderUnavailable
from gateway.logs import get_logger
from gateway.readers.base import ReaderHealth
from gateway.readers.framing import Rejected, ScanFramer, Suffix
from gateway.runtime.bridge import ThreadBridge

_log = get_logger("serial_scanner")

# The read timeout bounds how long the thread takes to notice a stop request if cancel_read() is
# not supported by the port type; it does not add latency (read returns as soon as bytes come).
_READ_TIMEOUT_S: Final = 0.2
_CHUNK_BYTES: Final = 4096
_QUEUE_CHUNKS: Final = 256
_STOP_WAIT_S: Final = 2.0


class _Port(Protocol):
    """What the driver uses of a pyserial port (Serial and the URL handlers' classes alike)."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def cancel_read(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Lost:
    reason: str


class SerialScannerDriver:
    """A serial scanner by path or pyserial URL; yields BarcodeScan, counts bad lines."""

    def __init__(
        self,
        reader_id: str,
        station: str,
        url: str,
        *,
        baud: int = 9600,
        suffix: Suffix = "CR",
        inter_char_timeout_s: float = 0.1,
        max_scan_bytes: int = 4096,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._id = reader_id
        self._station = station
        self._url = url
        # A plain device path (not a pyserial URL such as socket:// or loop://) can be watched.
        self._path = None if "://" in url else Path(url)
        self._baud = baud
        self._suffix: Suffix = suffix
        self._inter_char_timeout_s = inter_char_timeout_s
        self._max_scan_bytes = max_scan_bytes
        self._clock = clock
        self._monotonic = monotonic
        self._health = ReaderHealth(reader=reader_id, kind="serial-scanner")
        self._health.detail["url"] = url
        self._framer = self._new_framer()
        self._port: _Port | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._bridge: ThreadBridge[bytes | _Lost] | None = None
        # Taken off the bridge, not framed yet: the bridge is asked again only once this is empty.
        self._pending: deque[bytes | _Lost] = deque()
        self._sessions = 0

    @property
    def id(self) -> str:
        """The configured reader id."""
        return self._id

    @property
    def health(self) -> ReaderHealth:
        """Live health of this driver."""
        return self._health

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the unfinished scan the framer holds (never above max_scan_bytes)."""
        return self._framer.buffered_bytes

    async def __aenter__(self) -> Self:
        """Open the port and start its reader thread; ReaderUnavailable if it cannot be opened."""
        if self._port is not None:
            raise RuntimeError("driver already entered")
        self._health.state = "connecting"
        try:
            opened = await asyncio.to_thread(
                serial.serial_for_url, self._url, baudrate=self._baud, timeout=_READ_TIMEOUT_S
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            self._health.state = "down"
            self._health.last_error = str(exc)
            raise ReaderUnavailable(self._id, f"cannot open {self._url}: {exc}") from exc
        port = cast("_Port", opened)
        self._port = port
        self._framer = self._new_framer()
        self._bridge = ThreadBridge(_QUEUE_CHUNKS, name=f"serial:{self._id}")
        self._pending.clear()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read_thread,
            args=(port, self._bridge, self._stop),
            name=f"serial-scanner-{self._id}",
            daemon=True,
        )
        self._thread.start()
        if self._sessions:
            self._health.reconnects += 1
        self._sessions += 1
        self._health.state = "connected"
        self._health.last_error = None
        _log.info("serial_scanner_opened", reader=self._id, url=self._url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the reader thread (within about a second) and close the port."""
        port, thread, bridge = self._port, self._thread, self._bridge
        self._port = None
        self._thread = None
        if port is None or thread is None or bridge is None:
            return
        self._stop.set()
        # Releases a thread waiting for room; what nobody framed is counted and logged as lost.
        bridge.close()
        unframed = sum(isinstance(item, bytes) for item in self._pending)
        self._pending.clear()
        if unframed:
            _log.warning("serial_chunks_lost_at_close", reader=self._id, count=unframed)
        with contextlib.suppress(AttributeError, OSError, serial.SerialException):
            port.cancel_read()
        await asyncio.to_thread(thread.join, _STOP_WAIT_S)
        if thread.is_alive():
            _log.warning("serial_thread_stuck", reader=self._id, url=self._url)
        with contextlib.suppress(OSError, serial.SerialException):
            port.close()
        if self._health.state != "down":
            self._health.state = "idle"

    async def events(self) -> AsyncGenerator[BarcodeScan, None]:
        """Yield scans until the device is lost (ReaderUnavailable); bad lines are counted."""
        bridge = self._bridge
        if bridge is None or self._port is None:
            raise ReaderUnavailable(self._id, "not opened")
        self._health.state = "inventorying"
        while True:
            item = await self._next(bridge)
            if item is None:
                frames = self._framer.flush(self._monotonic())
            elif isinstance(item, _Lost):
                self._health.state = "down"
                self._health.last_error = item.reason
                _log.warning("serial_scanner_lost", reader=self._id, reason=item.reason)
                raise ReaderUnavailable(self._id, item.reason)
            else:
                frames = self._framer.feed(item, self._monotonic())
            for frame in frames:
                if isinstance(frame, Rejected):
                    self._health.bad_input += 1
                    _log.warning(
                        "scan_rejected",
                        reader=self._id,
                        reason=frame.reason,
                        length=frame.length,
                    )
                    continue
                at_s = self._clock()
                self._health.events += 1
                self._health.last_event_at_s = at_s
                yield BarcodeScan(
                    reader=self._id, station=self._station, data=frame.data, at_s=at_s
                )

    async def _next(self, bridge: ThreadBridge[bytes | _Lost]) -> bytes | _Lost | None:
        """The next chunk, or None when suffix `none`'s inter-character timeout passed first."""
        if not self._pending:
            self._pending.extend(bridge.take_nowait())
        if not self._pending:
            deadline = self._framer.deadline_s()
            try:
                if deadline is None:
                    batch = await bridge.get_batch()
                else:
                    async with asyncio.timeout(max(0.0, deadline - self._monotonic())):
                        batch = await bridge.get_batch()
            except TimeoutError:
                return None
            self._pending.extend(batch or [_Lost("driver closed")])
        return self._pending.popleft()

    def _new_framer(self) -> ScanFramer:
        return ScanFramer(
            self._suffix,
            max_scan_bytes=self._max_scan_bytes,
            inter_char_timeout_s=self._inter_char_timeout_s,
        )

    def _read_thread(
        self, port: _Port, bridge: ThreadBridge[bytes | _Lost], stop: threading.Event
    ) -> None:
        """Read chunks until stopped or the device fails; its one contact with the loop: put."""
        while not stop.is_set():
            item = self._read_once(port)
            if item is None:
                continue
            if isinstance(item, _Lost):
                if not stop.is_set():  # a port closed under a stopping thread is no news
                    bridge.put(item)
                return
            # Waits while the bridge is full; refused (and counted lost) once the driver closed.
            if not bridge.put(item):
                return

    def _read_once(self, port: _Port) -> bytes | _Lost | None:
        """One chunk of bytes, None when the read timed out, _Lost when the device is gone."""
        try:
            chunk = port.read(1)
            if chunk and (waiting := port.in_waiting):
                chunk += port.read(min(waiting, _CHUNK_BYTES))
        except (serial.SerialException, OSError, TypeError) as exc:
            # TypeError: pyserial reading a port that another thread has just closed.
            return _Lost(f"read failed: {exc}")
        if chunk:
            return chunk
        # Some USB and Bluetooth serial drivers leave reads timing out after an unplug; the node
        # (or its udev by-id link) going away is the sign then.
        if self._path is not None and not self._path.exists():
            return _Lost(f"device path {self._path} disappeared")
        return None
