"""Unplug and replug of a serial scanner: a pty behind a symlink, as udev's /dev/serial/by-id."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import tty
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.domain.events import BarcodeScan, InputHeard, RawEvent
from gateway.errors import ReaderUnavailable
from gateway.readers.base import Ack, Receipt
from gateway.readers.serial import SerialScannerDriver
from gateway.runtime.backoff import Backoff
from gateway.runtime.supervisor import ReaderSlot, supervise_reader

STEP_TIMEOUT_S = 10.0


class Pty:
    """A pty; its slave is what the scanner's by-id link points at; closing the master unplugs."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(os.write, self.master, data)

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


def plug(link: Path, pty: Pty) -> None:
    """Point the by-id link at this pty, atomically, as udev does on plug."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(pty.path)
    tmp.replace(link)


async def take(events: AsyncIterator[BarcodeScan], count: int) -> list[str]:
    out: list[str] = []
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while len(out) < count:
            out.append((await anext(events)).data)
    return out


async def test_unplug_mid_stream_then_replug_behind_the_same_link(tmp_path: Path) -> None:
    link = tmp_path / "usb-Honeywell_1900-if00"
    first, second = Pty(), Pty()
    driver = SerialScannerDriver("bench-1-scanner", "bench-1", str(link))

    try:
        got: list[str] = []
        plug(link, first)
        async with driver, contextlib.aclosing(driver.events()) as events:
            await first.write(b"A-1\rA-2\rA-3\rA-4-PARTI")
            got += await take(events, 3)
            first.close()  # unplugged mid-scan
            with pytest.raises(ReaderUnavailable):
                await take(events, 1)
        assert driver.health.state == "down"
        link.unlink()  # udev removes the link while the device is away

        with pytest.raises(ReaderUnavailable):
            async with driver:
                pass

        plug(link, second)
        async with driver, contextlib.aclosing(driver.events()) as events:
            await second.write(b"B-1\rB-2\r")
            got += await take(events, 2)
    finally:
        first.close()
        second.close()
    # The half-sent scan before the unplug is dropped, never glued to the first one after.
    assert got == ["A-1", "A-2", "A-3", "B-1", "B-2"]
    assert driver.health.reconnects == 1
    assert driver.health.events == 5
    assert driver.health.bad_input == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("serial-scanner-")]


async def test_supervisor_reconnects_a_replugged_scanner(tmp_path: Path) -> None:
    link = tmp_path / "usb-Zebra_DS2208-if00"
    first, second = Pty(), Pty()
    slot = ReaderSlot(reader="bench-1-scanner", kind="serial-scanner")
    got: list[str] = []

    try:
        done = asyncio.Event()
        first_seen = asyncio.Event()

        async def sink(
            event: RawEvent | InputHeard, _ack: Ack | None, _receipt: Receipt | None
        ) -> None:
            if isinstance(event, InputHeard):
                return  # the session ended: nothing of a scanner's to close
            assert isinstance(event, BarcodeScan)
            got.append(event.data)
            if event.data == "A-2":
                first_seen.set()
            if event.data == "B-2":
                done.set()

        plug(link, first)
        supervisor = asyncio.create_task(
            supervise_reader(
                lambda: SerialScannerDriver("bench-1-scanner", "bench-1", str(link)),
                slot,
                sink,
                Backoff(min_s=0.05, max_s=0.2),
            ),
            name="supervise-bench-1",
        )

        async def reaches(state: str) -> None:
            # Bounded by the timeout around the caller; a test watching state, not product code.
            while slot.state != state:
                await asyncio.sleep(0.01)

        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                # pyserial flushes input on open: write only once the port is open.
                await reaches("connected")
                await first.write(b"A-1\rA-2\r")
                await first_seen.wait()
                first.close()
                link.unlink()
                # Let the supervisor fail at least once against the missing link.
                await reaches("down")
                plug(link, second)
                await reaches("connected")
                await second.write(b"B-1\rB-2\r")
                await done.wait()
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
    finally:
        first.close()
        second.close()
    assert got == ["A-1", "A-2", "B-1", "B-2"]
    assert slot.reconnects >= 1
    assert slot.health().events == 4


async def test_link_removed_while_the_read_hangs_is_unavailable(tmp_path: Path) -> None:
    # The pty stays open (its reads just time out), as a USB adapter whose read never fails.
    link = tmp_path / "usb-Datalogic_QD2430-if00"
    pty = Pty()
    driver = SerialScannerDriver("bench-1-scanner", "bench-1", str(link))

    try:
        plug(link, pty)
        async with driver, contextlib.aclosing(driver.events()) as events:
            await pty.write(b"BEFORE\r")
            assert await take(events, 1) == ["BEFORE"]
            link.unlink()
            with pytest.raises(ReaderUnavailable) as caught:
                await take(events, 1)
        reason = caught.value.reason
    finally:
        pty.close()
    assert "disappeared" in reason
    assert driver.health.state == "down"
