"""The contract every scanner driver passes (serial on a pty, serial on loop://, TCP), plus load.

Each driver kind is driven through a rig that injects raw bytes the way its device would send them:
a pty master for a serial scanner, pyserial's loop:// port, a TCP client for a network handheld.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import threading
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from gateway.domain.events import BarcodeScan
from gateway.errors import ReaderUnavailable
from gateway.readers.serial import SerialScannerDriver
from gateway.readers.serial import driver as serial_driver
from gateway.readers.tcp import TcpScannerDriver
from gateway.readers.tcp.listener import parse_listen
from tests.support.clock import FakeClock

Driver = SerialScannerDriver | TcpScannerDriver
MAX_SCAN_BYTES = 64
STEP_TIMEOUT_S = 10.0
GS1 = "]C10180614141123458\x1d216789"


CLOCK_START_S = 1_800_000_000.0


def stepping_clock() -> FakeClock:
    """A wall clock that moves one second per read, so each at_s is known in advance."""
    return FakeClock(CLOCK_START_S, step_s=1.0)


class Rig(Protocol):
    station: str
    device: str | None
    can_lose: bool

    def make(self, clock: FakeClock, max_scan_bytes: int = MAX_SCAN_BYTES) -> Driver: ...
    async def connect(self, driver: Driver) -> None: ...
    async def send(self, data: bytes) -> None: ...
    async def disconnect(self) -> None: ...
    async def lose(self) -> None: ...
    def close(self) -> None: ...


class Pty:
    """A pty whose slave path a serial driver opens by name; closing the master is an unplug."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        # Raw before anyone writes: the default line discipline would echo and translate CR.
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)

    def write_blocking(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]

    async def write(self, data: bytes) -> None:
        # A full pty buffer blocks the writer until the driver drains it: keep that off the loop.
        await asyncio.to_thread(self.write_blocking, data)

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


class PtyRig:
    station = "bench-1"
    device: str | None = None
    can_lose = True

    def __init__(self) -> None:
        self.pty = Pty()

    def make(self, clock: FakeClock, max_scan_bytes: int = MAX_SCAN_BYTES) -> Driver:
        return SerialScannerDriver(
            "bench-1-scanner",
            self.station,
            self.pty.path,
            max_scan_bytes=max_scan_bytes,
            clock=clock,
        )

    async def connect(self, driver: Driver) -> None:
        pass

    async def send(self, data: bytes) -> None:
        await self.pty.write(data)

    async def disconnect(self) -> None:
        pass

    async def lose(self) -> None:
        self.pty.close()

    def close(self) -> None:
        self.pty.close()


class LoopRig:
    station = "bench-2"
    device: str | None = None
    can_lose = False

    def __init__(self) -> None:
        self.driver: SerialScannerDriver | None = None

    def make(self, clock: FakeClock, max_scan_bytes: int = MAX_SCAN_BYTES) -> Driver:
        return SerialScannerDriver(
            "bench-2-scanner", self.station, "loop://", max_scan_bytes=max_scan_bytes, clock=clock
        )

    async def connect(self, driver: Driver) -> None:
        assert isinstance(driver, SerialScannerDriver)
        self.driver = driver

    async def send(self, data: bytes) -> None:
        # loop:// hands what is written on a port back to the reader of the same port.
        assert self.driver is not None
        port = self.driver._port
        assert port is not None
        port.write(data)  # type: ignore[attr-defined]

    async def disconnect(self) -> None:
        pass

    async def lose(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TcpRig:
    station = "inspection-2"
    device: str | None = "handheld-1"
    can_lose = False

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None

    def make(self, clock: FakeClock, max_scan_bytes: int = MAX_SCAN_BYTES) -> Driver:
        return TcpScannerDriver(
            "door-3-handhelds",
            "door-3",
            "127.0.0.1:0",
            device_stations={"handheld-1": self.station},
            max_line_bytes=max_scan_bytes,
            clock=clock,
        )

    async def connect(self, driver: Driver) -> None:
        assert isinstance(driver, TcpScannerDriver)
        host, port = driver.address
        _, self.writer = await asyncio.open_connection(host, port)
        self.writer.write(b"device:handheld-1\n")

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def disconnect(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def lose(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


@pytest.fixture(params=["serial-pty", "serial-loop", "tcp"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    kinds: dict[str, type[PtyRig | LoopRig | TcpRig]] = {
        "serial-pty": PtyRig,
        "serial-loop": LoopRig,
        "tcp": TcpRig,
    }
    made: Rig = kinds[request.param]()
    yield made
    made.close()


async def take(events: AsyncIterator[BarcodeScan], count: int) -> list[BarcodeScan]:
    """The next `count` events, failing (not hanging) if they do not come."""
    out: list[BarcodeScan] = []
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while len(out) < count:
            out.append(await anext(events))
    return out


@contextlib.asynccontextmanager
async def running(rig: Rig, driver: Driver) -> AsyncIterator[Driver]:
    """The driver entered and the rig's device connected to it, both undone on the way out."""
    async with driver:
        await rig.connect(driver)
        try:
            yield driver
        finally:
            await rig.disconnect()


def _driver_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("serial-scanner-")]


# The contract --------------------------------------------------------------------------------


async def test_valid_scans_arrive_in_order_with_station_device_and_clock(rig: Rig) -> None:
    scans = [GS1, "]d2010614141123458", "RMA-000123", "DISP-RESTOCK", "LOC-A-01", "]Q1x?y=1"]
    scans += [f"ITEM-{n:04d}" for n in range(30)]

    clock = stepping_clock()
    async with running(rig, rig.make(clock)) as driver:
        async with contextlib.aclosing(driver.events()) as events:
            await rig.send(b"".join(s.encode() + b"\r" for s in scans))
            got = await take(events, len(scans))
        assert driver.health.events == len(scans)
        assert driver.health.bad_input == 0
        assert driver.health.last_event_at_s == got[-1].at_s
    assert [e.data for e in got] == scans
    assert {e.station for e in got} == {rig.station}
    assert {e.device for e in got} == {rig.device}
    assert [e.at_s for e in got] == [CLOCK_START_S + n for n in range(1, len(scans) + 1)]


async def test_bad_lines_are_counted_and_the_stream_goes_on(rig: Rig) -> None:
    async with running(rig, rig.make(stepping_clock())) as driver:
        async with contextlib.aclosing(driver.events()) as events:
            await rig.send(b"FIRST\r" + b"L" * 500 + b"\r")
            await rig.send(b"\x00\x01binary\xfe\r" + b"bad\xffutf8\r" + b"SECOND\r")
            got = await take(events, 2)
        bad = driver.health.bad_input
    assert [e.data for e in got] == ["FIRST", "SECOND"]
    assert bad == 3


async def test_losing_the_device_raises_reader_unavailable(rig: Rig) -> None:
    if not rig.can_lose:
        pytest.skip("this input has no device to lose (tcp: see test_tcp_bind_failure)")

    async with running(rig, rig.make(stepping_clock())) as driver:
        async with contextlib.aclosing(driver.events()) as events:
            await rig.send(b"BEFORE\rPARTIAL")
            assert [e.data for e in await take(events, 1)] == ["BEFORE"]
            await rig.lose()
            with pytest.raises(ReaderUnavailable) as caught:
                await take(events, 1)
        assert caught.value.reader == driver.id
        assert driver.health.state == "down"
        assert driver.health.last_error


async def test_exit_is_prompt_and_leaves_no_thread_even_with_a_blocked_consumer(rig: Rig) -> None:
    # A bound on failure, not a speed measurement: exit must not hang on a blocked read.
    async with asyncio.timeout(STEP_TIMEOUT_S):
        driver = rig.make(stepping_clock())
        async with running(rig, driver):
            events = driver.events()
            await rig.send(b"ONE\r")
            assert [e.data for e in await take(events, 1)] == ["ONE"]
            # A consumer waiting for the next scan when the supervisor shuts the reader down.
            consumer = asyncio.create_task(anext(events))
            await asyncio.sleep(0.05)
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
            await events.aclose()
        assert driver.health.state == "idle"
    assert _driver_threads() == []


async def test_reentering_reconnects_on_the_same_driver(rig: Rig) -> None:
    driver = rig.make(stepping_clock())
    got: list[str] = []
    for round_no in range(3):
        async with running(rig, driver), contextlib.aclosing(driver.events()) as events:
            await rig.send(f"ROUND-{round_no}\r".encode())
            got += [e.data for e in await take(events, 1)]
    assert driver.health.reconnects == 2
    assert got == ["ROUND-0", "ROUND-1", "ROUND-2"]
    assert _driver_threads() == []


# Opening failures ----------------------------------------------------------------------------


async def test_serial_missing_path_is_unavailable_at_enter(tmp_path: Path) -> None:
    driver = SerialScannerDriver("s", "bench-1", str(tmp_path / "ttyACM9"), clock=stepping_clock())

    with pytest.raises(ReaderUnavailable) as caught:
        async with driver:
            pass
    assert caught.value.reader == "s"
    assert driver.health.state == "down"
    assert _driver_threads() == []


async def test_tcp_bind_failure_is_unavailable() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        driver = TcpScannerDriver("t", "door-3", f"127.0.0.1:{port}", clock=stepping_clock())

        with pytest.raises(ReaderUnavailable) as caught:
            async with driver:
                pass
        assert caught.value.reader == "t"
    assert driver.health.state == "down"


def test_constructors_open_nothing(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    SerialScannerDriver("s", "b", str(tmp_path / "nope"))
    TcpScannerDriver("t", "b", "127.0.0.1:1")
    assert set(threading.enumerate()) == before


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:51000", ("127.0.0.1", 51000)),
        ("[::1]:0", ("::1", 0)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["51000", "host:", "host:port", ":51000", "h:70000"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError, match=r"listen|port"):
        parse_listen(listen)


# Load through the serial driver on a pty -----------------------------------------------------


def _load_stream(rng: random.Random) -> tuple[bytes, list[str], int]:
    """1,000 scans with garbage between them and one 100 kB unterminated line of noise.

    Returns the bytes, the scans that must arrive, and how many lines must be counted as bad.
    The scan sent right after the unterminated line is glued to it (nothing marks where garbage
    ends), so it is part of that one over-long bad line, not a scan that must arrive.
    """
    noise_bytes = bytes(b for b in range(256) if b != 0x0D)
    parts: list[bytes] = []
    expected: list[str] = []
    bad = 0
    for n in range(1000):
        kind = n % 4
        if kind == 0:
            data = f"]C1010614141{n:07d}\x1d21{n:06d}"
        elif kind == 1:
            data = f"RMA-{n:06d}"
        elif kind == 2:
            data = f"]E0{n:013d}"
        else:
            data = f"LOC-A-{n:04d}"
        if n == 500:
            blob = bytes(rng.choice(noise_bytes) for _ in range(100_000))
            parts.append(blob)
            bad += 1
        else:
            expected.append(data)
        parts.append(data.encode() + b"\r")
        if n % 7 == 3:
            garbage = bytes(rng.choice(noise_bytes) for _ in range(rng.randint(1, 40)))
            parts.append(b"\x00" + garbage + b"\r")
            bad += 1
        if n % 97 == 5:
            parts.append(b"9" * 6000 + b"\r")
            bad += 1
    return b"".join(parts), expected, bad


async def test_load_with_garbage_and_a_100k_unterminated_line_on_a_pty() -> None:
    rng = random.Random(4)
    stream, expected, bad = _load_stream(rng)
    pty = Pty()
    samples: list[int] = []
    max_scan_bytes = 4096

    try:
        driver = SerialScannerDriver(
            "bench-1-scanner",
            "bench-1",
            pty.path,
            max_scan_bytes=max_scan_bytes,
            clock=stepping_clock(),
        )
        async with driver:

            async def writer() -> None:
                offset = 0
                while offset < len(stream):
                    size = rng.randint(1, 2048)
                    await pty.write(stream[offset : offset + size])
                    offset += size
                    samples.append(driver.buffered_bytes)

            got: list[str] = []
            async with contextlib.aclosing(driver.events()) as events, asyncio.TaskGroup() as tg:
                tg.create_task(writer(), name="pty-writer")
                async with asyncio.timeout(60):
                    async for event in events:
                        got.append(event.data)
                        samples.append(driver.buffered_bytes)
                        if len(got) == len(expected):
                            break
            bad_counted, event_count = driver.health.bad_input, driver.health.events
    finally:
        pty.close()
    assert got == expected
    assert event_count == len(expected) == 999
    assert bad_counted == bad
    assert samples
    assert max(samples) <= max_scan_bytes


# TCP specifics -------------------------------------------------------------------------------


async def test_ten_handhelds_at_once_keep_their_device_and_station() -> None:
    stations = {f"handheld-{n}": f"station-{n % 3}" for n in range(10)}
    per_device = 30

    driver = TcpScannerDriver(
        "door-3-handhelds",
        "door-3",
        "127.0.0.1:0",
        device_stations=stations,
        clock=stepping_clock(),
    )
    async with driver:
        host, port = driver.address

        async def handheld(name: str) -> None:
            _, writer = await asyncio.open_connection(host, port)
            writer.write(f"device:{name}\r\n".encode())
            for n in range(per_device):
                writer.write(f"{name}/ITEM-{n}\r\n".encode())
                await writer.drain()
                await asyncio.sleep(0)
            writer.close()
            await writer.wait_closed()

        async with contextlib.aclosing(driver.events()) as events:
            async with asyncio.TaskGroup() as tg:
                for name in stations:
                    tg.create_task(handheld(name), name=name)
            got = await take(events, len(stations) * per_device)
        assert driver.health.bad_input == 0
    for name, station in stations.items():
        mine = [e for e in got if e.device == name]
        assert [e.data for e in mine] == [f"{name}/ITEM-{n}" for n in range(per_device)]
        assert {e.station for e in mine} == {station}


async def test_device_named_by_address_else_ip_port_and_hello_only_first() -> None:
    driver = TcpScannerDriver(
        "h",
        "door-3",
        "127.0.0.1:0",
        devices={"127.0.0.1": "handheld-7"},
        clock=stepping_clock(),
    )
    async with driver:
        host, port = driver.address
        async with contextlib.aclosing(driver.events()) as events:
            _, first = await asyncio.open_connection(host, port)
            first.write(b"A1\ndevice:not-a-hello\n")
            by_address = await take(events, 2)
            _, second = await asyncio.open_connection(host, port)
            second.write(b"device:bad name!\nB1\n")
            bad_hello = await take(events, 1)
            for w in (first, second):
                w.close()
                await w.wait_closed()
        got, bad = [*by_address, *bad_hello], driver.health.bad_input
    assert [(e.data, e.device) for e in got] == [
        ("A1", "handheld-7"),
        ("device:not-a-hello", "handheld-7"),
        ("B1", "handheld-7"),
    ]
    assert {e.station for e in got} == {"door-3"}
    assert bad == 1


async def test_unnamed_device_is_ip_port() -> None:
    driver = TcpScannerDriver("h", "door-3", "127.0.0.1:0", clock=stepping_clock())
    async with driver:
        host, port = driver.address
        async with contextlib.aclosing(driver.events()) as events:
            _, writer = await asyncio.open_connection(host, port)
            writer.write(b"X1\r\n")
            local = writer.get_extra_info("sockname")
            (scan,) = await take(events, 1)
            writer.close()
            await writer.wait_closed()
        address = f"{local[0]}:{local[1]}"
    assert scan.device == address


async def test_idle_client_is_closed_and_others_go_on() -> None:
    driver = TcpScannerDriver(
        "h", "door-3", "127.0.0.1:0", idle_timeout_s=0.2, clock=stepping_clock()
    )
    async with driver:
        host, port = driver.address
        idle_reader, idle_writer = await asyncio.open_connection(host, port)
        async with asyncio.timeout(STEP_TIMEOUT_S):
            # The server closing the idle client is seen as end of stream.
            eof = await idle_reader.read()
        idle_writer.close()
        async with contextlib.aclosing(driver.events()) as events:
            _, writer = await asyncio.open_connection(host, port)
            writer.write(b"STILL-HERE\n")
            got = [e.data for e in await take(events, 1)]
            writer.close()
            await writer.wait_closed()
    assert eof == b""
    assert got == ["STILL-HERE"]


# HID (keyboard wedge) --------------------------------------------------------------------------


def _uinput_or_skip() -> object:
    """An evdev.UInput keyboard, or skip: containers and CI runners rarely expose /dev/uinput."""
    evdev = pytest.importorskip("evdev", reason="evdev not installed")
    if not os.access("/dev/uinput", os.R_OK | os.W_OK):
        pytest.skip("/dev/uinput is missing or not writable: HID driver needs a virtual keyboard")
    from gateway.readers.hid.keymap import KEY_CODES

    try:
        return evdev.UInput({evdev.ecodes.EV_KEY: sorted(KEY_CODES.values())}, name="test-wedge")
    except (OSError, evdev.UInputError) as exc:
        pytest.skip(f"cannot create a uinput device: {exc}")


async def test_hid_missing_device_is_unavailable(tmp_path: Path) -> None:
    from gateway.readers.hid.driver import HidScannerDriver

    driver = HidScannerDriver("wedge", "bench-1", str(tmp_path / "event99"), clock=stepping_clock())

    with pytest.raises(ReaderUnavailable) as caught:
        async with driver:
            pass
    assert caught.value.reader == "wedge"
    assert driver.health.state == "down"


def test_hid_bad_gs_key_fails_at_construction() -> None:
    from gateway.readers.hid.driver import HidScannerDriver

    with pytest.raises(ValueError, match="unknown key"):
        HidScannerDriver("wedge", "bench-1", "/dev/input/event0", gs_key="KEY_BOGUS")


async def test_hid_driver_on_a_virtual_keyboard() -> None:
    from gateway.readers.hid.driver import HidScannerDriver
    from gateway.readers.hid.keymap import KEY_CODES

    uinput: Any = _uinput_or_skip()
    k = KEY_CODES
    ev_key = 1

    def type_line(text: str) -> None:
        for char in text:
            code = k["KEY_F8"] if char == "\x1d" else k["KEY_RIGHTBRACE"] if char == "]" else None
            shift = char.isupper()
            code = code or k[f"KEY_{char.upper()}"]
            if shift:
                uinput.write(ev_key, k["KEY_LEFTSHIFT"], 1)
            uinput.write(ev_key, code, 1)
            uinput.write(ev_key, code, 0)
            if shift:
                uinput.write(ev_key, k["KEY_LEFTSHIFT"], 0)
        uinput.write(ev_key, k["KEY_ENTER"], 1)
        uinput.write(ev_key, k["KEY_ENTER"], 0)
        uinput.syn()

    try:
        driver = HidScannerDriver("wedge", "bench-1", uinput.device.path, clock=stepping_clock())
        async with driver, contextlib.aclosing(driver.events()) as events:
            type_line(GS1)
            uinput.write(ev_key, 1, 1)  # KEY_ESC: not a scanner key, rejects the line
            type_line("X")
            type_line("RMA-000123".replace("-", ""))
            got = await take(events, 2)
            uinput.close()  # the scanner unplugged
            with pytest.raises(ReaderUnavailable):
                await take(events, 1)
            lost = driver.health.state == "down"
        bad = driver.health.bad_input
    finally:
        uinput.close()
    assert [(e.data, e.station) for e in got] == [(GS1, "bench-1"), ("RMA000123", "bench-1")]
    assert bad == 1
    assert lost


async def test_serial_without_suffix_ends_scans_on_the_inter_character_timeout() -> None:
    pty = Pty()

    try:
        driver = SerialScannerDriver(
            "s",
            "bench-1",
            pty.path,
            suffix="none",
            inter_char_timeout_s=0.05,
            clock=stepping_clock(),
        )
        got: list[str] = []
        async with driver, contextlib.aclosing(driver.events()) as events:
            await pty.write(b"]C1" + b"0180614141123458")
            got += [e.data for e in await take(events, 1)]
            consumer = asyncio.create_task(take(events, 1))
            await pty.write(b"\x00\x01")
            async with asyncio.timeout(STEP_TIMEOUT_S):
                # A test watching a counter (bounded): the noise must end before the label starts.
                while driver.health.bad_input == 0:
                    await asyncio.sleep(0.01)
            await pty.write(b"RMA-000123")
            got += [e.data for e in await consumer]
        bad = driver.health.bad_input
    finally:
        pty.close()
    assert got == ["]C10180614141123458", "RMA-000123"]
    assert bad == 1


async def test_tcp_line_cut_by_the_client_closing_is_counted_not_scanned() -> None:
    driver = TcpScannerDriver("h", "door-3", "127.0.0.1:0", clock=stepping_clock())
    async with driver, contextlib.aclosing(driver.events()) as events:
        host, port = driver.address
        _, cut = await asyncio.open_connection(host, port)
        cut.write(b"WHOLE\n0106141411234")
        first = await take(events, 1)
        cut.close()
        await cut.wait_closed()
        _, writer = await asyncio.open_connection(host, port)
        writer.write(b"NEXT\n")
        second = await take(events, 1)
        writer.close()
        await writer.wait_closed()
        # The cut line is counted when its connection is read to the end, before or after NEXT.
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while driver.health.bad_input == 0:
                await asyncio.sleep(0.01)
        got, bad = [e.data for e in first + second], driver.health.bad_input
    assert got == ["WHOLE", "NEXT"]
    assert bad == 1


async def test_serial_stalled_consumer_blocks_the_thread_and_loses_no_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serial_driver, "_QUEUE_CHUNKS", 2)
    pty = Pty()

    async def until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while not condition():
                await asyncio.sleep(0.005)

    try:
        driver = SerialScannerDriver("bench-1-scanner", "bench-1", pty.path, clock=stepping_clock())
        async with driver:
            bridge = driver._bridge
            assert bridge is not None
            # Nobody consumes: each write is one chunk, the third waits for room in the bridge.
            for n in range(3):
                await pty.write(f"S{n:04d}\r".encode())

                def reached(want: int = min(n + 1, 2)) -> bool:
                    return bridge.queued_weight == want

                await until(reached)
            await until(lambda: bridge.producer_waiting)
            assert bridge.producer_waiting
            # The rest stays in the pty: the thread no longer reads the device.
            await pty.write(b"".join(f"S{n:04d}\r".encode() for n in range(3, 200)))
            assert bridge.queued_weight == 2
            events = driver.events()
            got = [e.data for e in await take(events, 200)]
            await events.aclose()
        assert got == [f"S{n:04d}" for n in range(200)]
        assert bridge.waits >= 1
        assert bridge.lost == 0
    finally:
        pty.close()
