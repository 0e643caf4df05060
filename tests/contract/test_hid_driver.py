"""The keyboard-wedge driver's own logic, through an injected device: no /dev/uinput here.

The fake stands only where the kernel would (opening, grabbing, reading an input device); the
events are evdev's own InputEvent objects, decoded by the real keymap, and a vanished device
raises OSError(ENODEV) exactly as evdev does when a scanner is unplugged.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator

import evdev
import pytest

from gateway.errors import ReaderUnavailable
from gateway.readers.hid.driver import HidScannerDriver
from gateway.readers.hid.keymap import KEY_CODES

SHIFT = KEY_CODES["KEY_LEFTSHIFT"]


def _keys(text: str) -> list[tuple[int, int]]:
    """(code, value) presses and releases that type `text` on a US layout, then Enter."""
    out: list[tuple[int, int]] = []
    for char in text:
        if char == "\x1d":
            name, shift = "KEY_F8", False
        elif char.isdigit():
            name, shift = f"KEY_{char}", False
        elif char == "]":
            name, shift = "KEY_RIGHTBRACE", False
        elif char == "-":
            name, shift = "KEY_MINUS", False
        else:
            name, shift = f"KEY_{char.upper()}", char.isupper()
        if shift:
            out.append((SHIFT, 1))
        out += [(KEY_CODES[name], 1), (KEY_CODES[name], 0)]
        if shift:
            out.append((SHIFT, 0))
    return [*out, (KEY_CODES["KEY_ENTER"], 1), (KEY_CODES["KEY_ENTER"], 0)]


class FakeDevice:
    """Stands where the kernel's input device would; records grab and close."""

    def __init__(self, events: list[tuple[int, int]], *, busy: bool = False) -> None:
        self.events = events
        self.busy = busy
        self.grabbed = False
        self.closed = False

    def grab(self) -> None:
        if self.busy:
            raise OSError(errno.EBUSY, "Device or resource busy")
        self.grabbed = True

    def ungrab(self) -> None:
        self.grabbed = False

    def close(self) -> None:
        self.closed = True

    async def async_read_loop(self) -> AsyncIterator[evdev.InputEvent]:
        for code, value in self.events:
            yield evdev.InputEvent(0, 0, evdev.ecodes.EV_MSC, 4, 7)  # scan-code noise, ignored
            yield evdev.InputEvent(0, 0, evdev.ecodes.EV_KEY, code, value)
            await asyncio.sleep(0)
        raise OSError(errno.ENODEV, "No such device")  # the scanner was unplugged


async def _run(device: FakeDevice) -> tuple[list[str], HidScannerDriver, BaseException | None]:
    driver = HidScannerDriver(
        "wedge",
        "restock-1",
        "/dev/input/event7",
        open_device=lambda _path: device,
        clock=lambda: 1.0,
    )
    scans: list[str] = []
    error: BaseException | None = None
    try:
        async with driver:
            assert device.grabbed, "the device is grabbed while in use"
            # A loop, not a comprehension: the scans before the unplug must be kept.
            async for scan in driver.events():
                scans.append(scan.data)  # noqa: PERF401
    except ReaderUnavailable as exc:
        error = exc
    return scans, driver, error


async def test_scans_decoded_bad_ones_counted_unplug_raises_and_releases() -> None:
    gs1 = "]C10180614141123458\x1d216789"
    events = (
        _keys(gs1)
        + _keys("LOC-A-01")
        + [(KEY_CODES["KEY_F1"], 1), (KEY_CODES["KEY_F1"], 0), (KEY_CODES["KEY_ENTER"], 1)]
        + _keys("RMA-7")
    )
    device = FakeDevice(events)
    scans, driver, error = await _run(device)
    assert scans == [gs1, "LOC-A-01", "RMA-7"]
    assert driver.health.bad_input == 1, "the scan with an unknown key is refused and counted"
    assert isinstance(error, ReaderUnavailable)
    assert "device lost" in error.reason
    assert driver.health.state == "down"
    assert device.closed
    assert not device.grabbed, "an unplugged device is released"


async def test_busy_device_is_unavailable_not_a_crash() -> None:
    device = FakeDevice([], busy=True)
    scans, _, error = await _run(device)
    assert scans == []
    assert isinstance(error, ReaderUnavailable)
    assert "cannot grab" in error.reason
    assert device.closed


async def test_missing_device_path_is_unavailable() -> None:
    driver = HidScannerDriver("wedge", "restock-1", "/nonexistent/event99")

    with pytest.raises(ReaderUnavailable, match="cannot open"):
        async with driver:
            pass
