"""Keyboard-wedge scanners through evdev (the one product module importing it), read on the loop.

The device is grabbed (when configured) so its keystrokes do not reach a console or another
program. evdev's async reader runs on the asyncio loop, so no thread is involved. The device
disappearing (unplug -> ENODEV) raises ReaderUnavailable from `events()`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import Any, Self

import evdev

from gateway.domain.events import BarcodeScan
from gateway.errors import ReaderUnavailable
from gateway.logs import get_logger
from gateway.readers.base import ReaderHealth
from gateway.readers.framing import Rejected
from gateway.readers.hid.keymap import KeyDecoder

_log = get_logger("hid_scanner")


class HidScannerDriver:
    """A keyboard-wedge scanner at an evdev path; yields BarcodeScan, counts bad scans."""

    def __init__(
        self,
        reader_id: str,
        station: str,
        device: str,
        *,
        gs_key: str = "KEY_F8",
        grab: bool = True,
        max_scan_bytes: int = 4096,
        clock: Callable[[], float] = time.time,
        open_device: Callable[[str], Any] = evdev.InputDevice,
    ) -> None:
        self._id = reader_id
        self._open_device = open_device
        self._station = station
        self._path = device
        self._gs_key = gs_key
        self._grab = grab
        self._max_scan_bytes = max_scan_bytes
        self._clock = clock
        # Validates gs_key at construction, before any device is touched.
        self._decoder = KeyDecoder(gs_key=gs_key, max_scan_bytes=max_scan_bytes)
        self._health = ReaderHealth(reader=reader_id, kind="hid-scanner")
        self._health.detail["device"] = device
        self._device: Any = None
        self._sessions = 0

    @property
    def id(self) -> str:
        """The configured reader id."""
        return self._id

    @property
    def health(self) -> ReaderHealth:
        """Live health of this driver."""
        return self._health

    async def __aenter__(self) -> Self:
        """Open (and grab) the input device; ReaderUnavailable if it is missing or busy."""
        if self._device is not None:
            raise RuntimeError("driver already entered")
        self._health.state = "connecting"
        try:
            device = self._open_device(self._path)
        except OSError as exc:
            self._fail(str(exc))
            raise ReaderUnavailable(self._id, f"cannot open {self._path}: {exc.strerror}") from exc
        if self._grab:
            try:
                device.grab()
            except OSError as exc:
                device.close()
                self._fail(str(exc))
                raise ReaderUnavailable(self._id, f"cannot grab {self._path}: {exc}") from exc
        self._device = device
        self._decoder = KeyDecoder(gs_key=self._gs_key, max_scan_bytes=self._max_scan_bytes)
        if self._sessions:
            self._health.reconnects += 1
        self._sessions += 1
        self._health.state = "connected"
        self._health.last_error = None
        _log.info("hid_scanner_opened", reader=self._id, device=self._path, grab=self._grab)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release the grab and close the device."""
        device, self._device = self._device, None
        if device is None:
            return
        # The device may be gone already (unplugged); ungrab and close are best effort then.
        if self._grab:
            with contextlib.suppress(OSError):
                device.ungrab()
        with contextlib.suppress(OSError):
            device.close()
        if self._health.state != "down":
            self._health.state = "idle"

    async def events(self) -> AsyncGenerator[BarcodeScan, None]:
        """Yield scans until the device is removed (ReaderUnavailable); bad scans are counted."""
        device = self._device
        if device is None:
            raise ReaderUnavailable(self._id, "not opened")
        self._health.state = "inventorying"
        try:
            async for event in device.async_read_loop():
                if event.type != evdev.ecodes.EV_KEY:
                    continue
                frame = self._decoder.feed(event.code, event.value)
                if frame is None:
                    continue
                if isinstance(frame, Rejected):
                    self._health.bad_input += 1
                    _log.warning(
                        "scan_rejected", reader=self._id, reason=frame.reason, length=frame.length
                    )
                    continue
                at_s = self._clock()
                self._health.events += 1
                self._health.last_event_at_s = at_s
                yield BarcodeScan(
                    reader=self._id, station=self._station, data=frame.data, at_s=at_s
                )
        except OSError as exc:
            self._fail(str(exc))
            _log.warning("hid_scanner_lost", reader=self._id, device=self._path, error=str(exc))
            raise ReaderUnavailable(self._id, f"device lost: {exc.strerror}") from exc
        self._fail("device closed")
        raise ReaderUnavailable(self._id, "device closed")

    def _fail(self, reason: str) -> None:
        self._health.state = "down"
        self._health.last_error = reason
