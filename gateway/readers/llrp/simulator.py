"""An LLRP 1.0.1 reader simulator: an asyncio TCP server that plays a scenario as a fixed reader.

Scenario time starts when the first ROSpec is enabled (or started) and runs `speed` times faster
than the wall clock; it keeps running across client reconnections, so tags that pass while no
client is connected are not reported, as at a real door. Tags are reported only while a ROSpec
is active: with a GPI start trigger, only once the beam (a GPI, from the scenario or `set_gpi`)
has risen. GPO writes are recorded: tests read the light from `record.gpo`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from gateway.errors import FrameError
from gateway.logs import get_logger
from gateway.readers.llrp import frames as f
from gateway.readers.llrp.gpio import gpi_event, gpo_writes
from gateway.readers.llrp.scenario import Fault, Scenario

_log = get_logger("llrp_simulator")
_TICK_S = 0.05
_UNSET_CLOCK_EPOCH_S = 946_684_800.0  # 2000-01-01: what a reader without NTP reports
_EDGEX_TYPES = {
    "ROAccessReport": f.RO_ACCESS_REPORT,
    "ReaderEventNotification": f.READER_EVENT_NOTIFICATION,
    "GetReaderCapabilitiesResponse": f.GET_READER_CAPABILITIES_RESPONSE,
    "GetReaderConfigResponse": f.GET_READER_CONFIG_RESPONSE,
    "CloseConnectionResponse": f.CLOSE_CONNECTION_RESPONSE,
    "GetROSpecsResponse": 36,
    "GetAccessSpecsResponse": 54,
}

Rejectable = Literal["ADD_ROSPEC", "SET_READER_CONFIG"]


@dataclass(frozen=True, slots=True)
class GpioChange:
    """A port set high or low at `mono_s` (time.monotonic())."""

    mono_s: float
    port: int
    high: bool


@dataclass(slots=True)
class SimulatorRecord:
    """What the simulator was sent and did; tests and profile checks read it."""

    connections: int = 0
    received_types: list[int] = field(default_factory=list)
    rospecs: list[f.ROSpec] = field(default_factory=list)
    keepalive_ms: int | None = None
    keepalives_sent: int = 0
    keepalive_acks: int = 0
    reports_sent: int = 0
    tag_reads_sent: int = 0
    epcs_sent: set[str] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)
    faults_fired: list[str] = field(default_factory=list)
    frames_replayed: int = 0
    gpo: dict[int, bool] = field(default_factory=dict)  # each GPO port's state now
    gpo_writes: list[GpioChange] = field(default_factory=list)
    gpi: dict[int, bool] = field(default_factory=dict)
    gpi_changes: list[GpioChange] = field(default_factory=list)
    rospec_starts_mono: list[float] = field(default_factory=list)
    rospec_stops_mono: list[float] = field(default_factory=list)

    @property
    def last_rospec(self) -> f.ROSpec | None:
        """The most recent ROSpec added."""
        return self.rospecs[-1] if self.rospecs else None


class LlrpSimulator:
    """`async with LlrpSimulator(scenario) as sim:` serves LLRP on `sim.port` until exit."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        capabilities: f.Capabilities | None = None,
        replay_root: Path | None = None,
        seed: int = 7,
    ) -> None:
        self.scenario = scenario
        self.record = SimulatorRecord()
        self.finished = asyncio.Event()
        self.mute_new_connections = False  # accept, then never answer (a hung reader)
        self.on_gpo: Callable[[int, bool], None] | None = None  # told of each GPO write
        self._host = host
        self._port = port
        self._speed = speed
        self._caps = capabilities or f.Capabilities()
        self._replay_root = replay_root
        self._rng = random.Random(seed)  # noqa: S311 - simulated RSSI noise
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._start_mono: float | None = None
        self._start_wall_s = 0.0
        self._reject: dict[str, tuple[int, str]] = {}
        self._fault_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound TCP port (useful with port=0)."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def __aenter__(self) -> Self:
        """Start listening."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop listening, close every connection and task."""
        if self._server is not None:
            self._server.close()
        for s in list(self._sessions):
            s.close()
        for task in [*self._tasks, *([self._fault_task] if self._fault_task else [])]:
            task.cancel()
        for task in [*self._tasks, *([self._fault_task] if self._fault_task else [])]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    def reject_next(
        self, what: Rejectable, code: int = f.STATUS_FIELD_ERROR, reason: str = "rejected"
    ) -> None:
        """Answer the next ADD_ROSPEC or SET_READER_CONFIG with an LLRPStatus error."""
        self._reject[what] = (code, reason)

    async def inject(self, fault: Fault) -> int:
        """Apply a fault now to every open connection (the demo's chaos); how many it hit."""
        sessions = list(self._sessions)
        for session in sessions:
            await session.fault(fault)
        self.record.faults_fired.append(fault.kind)
        return len(sessions)

    def set_gpi(self, port: int, *, high: bool) -> None:
        """Set a GPI (break or clear a beam): GPIEvent to every client, GPI start triggers fire."""
        if self.record.gpi.get(port, False) == high:
            return
        self.record.gpi[port] = high
        self.record.gpi_changes.append(GpioChange(time.monotonic(), port, high))
        _log.info("simulator_gpi", port=port, high=high)
        for session in list(self._sessions):
            session.gpi_changed(port, high=high)

    def gpo_history(self, port: int) -> list[GpioChange]:
        """Every write to one GPO port, in order."""
        return [w for w in self.record.gpo_writes if w.port == port]

    def scenario_time_s(self) -> float | None:
        """Scenario seconds since inventory first started, or None before."""
        if self._start_mono is None:
            return None
        return (time.monotonic() - self._start_mono) * self._speed

    def expected_epcs(self, role: str | None = None) -> set[str]:
        """EPCs of the scenario's tags (of one role)."""
        return {t.epc_hex for t in self.scenario.tags if role is None or t.role == role}

    # -- internals used by sessions --

    def _start_scenario(self) -> None:
        if self._start_mono is not None:
            return
        self._start_mono = time.monotonic()
        self._start_wall_s = time.time()
        self._fault_task = asyncio.create_task(self._run_faults(), name="llrp-sim-faults")
        if self.scenario.gpi:
            self._spawn(self._run_gpi(), "llrp-sim-gpi")

    async def _run_gpi(self) -> None:
        assert self._start_mono is not None
        for change in sorted(self.scenario.gpi, key=lambda c: c.at_s):
            delay = change.at_s / self._speed - (time.monotonic() - self._start_mono)
            if delay > 0:
                await asyncio.sleep(delay)
            self.set_gpi(change.port, high=change.high)

    def _gpo_written(self, states: dict[int, bool]) -> None:
        now = time.monotonic()
        for port, high in states.items():
            self.record.gpo[port] = high
            self.record.gpo_writes.append(GpioChange(now, port, high))
            if self.on_gpo is not None:
                self.on_gpo(port, high)

    def _reader_clock_us(self, scenario_s: float) -> int:
        base = _UNSET_CLOCK_EPOCH_S if self.scenario.clock_unset else self._start_wall_s
        return int((base + scenario_s) * 1_000_000)

    def _reads(self, t0_s: float, t1_s: float) -> list[f.TagReport]:
        out: list[f.TagReport] = []
        for tag in self.scenario.tags:
            epc = bytes.fromhex(tag.epc_hex)
            for p in tag.passes:
                n = p.reads_between(t0_s, t1_s)
                if n <= 0:
                    continue
                for ant in p.antennas:
                    for k in range(n):
                        at_s = min(t1_s, max(t0_s, p.start_s)) + k / max(p.reads_per_s, 1.0)
                        at_us = self._reader_clock_us(min(at_s, t1_s))
                        rssi = round(p.rssi_dbm + self._rng.uniform(-2.0, 2.0))
                        out.append(f.TagReport(epc, ant, rssi, 1 + (ant % 4), at_us, at_us))
        return out

    async def _run_faults(self) -> None:
        assert self._start_mono is not None
        for fault in sorted(self.scenario.faults, key=lambda x: x.at_s):
            delay = fault.at_s / self._speed - (time.monotonic() - self._start_mono)
            if delay > 0:
                await asyncio.sleep(delay)
            self.record.faults_fired.append(fault.kind)
            _log.info("simulator_fault", kind=fault.kind, at_s=fault.at_s)
            for s in list(self._sessions):
                await s.fault(fault)
        rest = self.scenario.duration_s / self._speed - (time.monotonic() - self._start_mono)
        if rest > 0:
            await asyncio.sleep(rest)
        self.finished.set()

    def _replay_frames(self, fault: Fault) -> list[bytes]:
        if fault.path is None:
            return []
        path = Path(fault.path)
        if not path.is_absolute() and self._replay_root is not None:
            path = self._replay_root / path
        return replay_frames(path)

    def _spawn(self, coro: Coroutine[None, None, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        self._sessions.add(session)
        self.record.connections += 1
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            session.close()


def replay_frames(path: Path) -> list[bytes]:
    """Whole LLRP frames from an LTK `.bin` (frames back to back) or an EdgeX `.bytes` body."""
    data = path.read_bytes()
    if path.suffix == ".bytes":
        kind = path.stem.rsplit("-", 1)[0]
        msg_type = _EDGEX_TYPES.get(kind)
        if msg_type is None:
            raise FrameError("llrp", f"unknown EdgeX message kind {kind}")
        return [f.Message(msg_type, 1, data).to_bytes()]
    out: list[bytes] = []
    pos = 0
    while pos + f.HEADER_LEN <= len(data):
        head = f.Header.from_bytes(data[pos : pos + f.HEADER_LEN])
        out.append(data[pos : pos + head.length])
        pos += head.length
    return out


def _reads_per_report(spec: f.ROSpec | None, reads: int) -> int:
    """How many tag reads go in one RO_ACCESS_REPORT under the ROSpec's report trigger."""
    # ROReportTrigger 1 and 2: upon N tags (or the end of the AISpec / ROSpec).
    if spec is not None and spec.report_trigger in (1, 2) and spec.report_n > 0:
        return spec.report_n
    return max(1, reads)


class _Session:
    """One client connection."""

    def __init__(
        self, sim: LlrpSimulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._sim = sim
        self._reader = reader
        self._writer = writer
        self._next_id = 1000
        self._silent = sim.mute_new_connections
        self._rospecs: dict[int, f.ROSpec] = {}
        self._enabled: set[int] = set()
        self._active: int | None = None
        self._report_task: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._report_task, self._keepalive_task):
            if task is not None:
                task.cancel()
        self._writer.close()

    async def run(self) -> None:
        self._send(f.connection_attempt_event(self._msg_id(), int(time.time() * 1e6)))
        try:
            while not self._closed:
                head = f.Header.from_bytes(await self._reader.readexactly(f.HEADER_LEN))
                body = await self._reader.readexactly(head.length - f.HEADER_LEN)
                self._sim.record.received_types.append(head.msg_type)
                if self._silent:
                    continue
                if not self._handle(head, body):
                    break
                await self._writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, FrameError):
            pass
        finally:
            self.close()

    def _msg_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _send(self, frame: bytes) -> None:
        if not self._closed and not self._silent:
            self._writer.write(frame)

    def _handle(self, head: f.Header, body: bytes) -> bool:  # noqa: C901, PLR0912 - a branch per message type
        t, mid = head.msg_type, head.msg_id
        rec = self._sim.record
        if t == f.GET_READER_CAPABILITIES:
            self._send(self._sim._caps.response(mid))  # noqa: SLF001 - simulator internals
        elif t == f.GET_READER_CONFIG:
            self._send(
                f.reader_config_response(
                    mid,
                    self._sim._caps.antennas,  # noqa: SLF001
                    rec.keepalive_ms or 0,
                    rec.gpi,
                )
            )
        elif t == f.SET_READER_CONFIG:
            if self._rejected("SET_READER_CONFIG", t, mid):
                return True
            writes = gpo_writes(body)
            if writes:
                self._sim._gpo_written(writes)  # noqa: SLF001 - simulator internals
            else:
                rec.keepalive_ms = f.parse_keepalive_ms(body)
                self._restart_keepalives()
            self._send(f.response(t, mid))
        elif t == f.ADD_ROSPEC:
            if self._rejected("ADD_ROSPEC", t, mid):
                return True
            spec = f.ROSpec.from_add_rospec(body)
            rec.rospecs.append(spec)
            self._rospecs[spec.rospec_id] = spec
            self._send(f.response(t, mid))
        elif t in (
            f.ENABLE_ROSPEC,
            f.START_ROSPEC,
            f.STOP_ROSPEC,
            f.DISABLE_ROSPEC,
            f.DELETE_ROSPEC,
        ):
            self._rospec_op(t, mid, struct.unpack_from("!I", body)[0] if len(body) >= 4 else 0)
        elif t == f.DELETE_ACCESSSPEC:
            self._send(f.response(t, mid))
        elif t == f.ENABLE_EVENTS_AND_REPORTS:
            pass
        elif t == f.KEEPALIVE_ACK:
            rec.keepalive_acks += 1
        elif t == f.CUSTOM_MESSAGE and (ext := f.impinj_enable_extensions_response(mid, body)):
            self._send(ext)
        elif t == f.CLOSE_CONNECTION:
            self._send(f.response(t, mid))
            return False
        else:
            code = f.STATUS_PARAMETER_ERROR
            self._send(
                f.Message(f.ERROR_MESSAGE, mid, f.llrp_status(code, "unsupported")).to_bytes()
            )
        return True

    def _rejected(self, what: str, t: int, mid: int) -> bool:
        rejection = self._sim._reject.pop(what, None)  # noqa: SLF001 - simulator internals
        if rejection is None:
            return False
        self._sim.record.rejected.append(what)
        self._send(f.response(t, mid, rejection[0], rejection[1]))
        return True

    def _rospec_op(self, t: int, mid: int, rospec_id: int) -> None:
        ids = list(self._rospecs) if rospec_id == 0 else [rospec_id]
        if any(i not in self._rospecs for i in ids):
            self._send(f.response(t, mid, f.STATUS_INVALID_ROSPEC_ID, "no such ROSpec"))
            return
        for i in ids:
            if t == f.ENABLE_ROSPEC:
                self._enabled.add(i)
                self._sim._start_scenario()  # noqa: SLF001 - simulator internals
                if self._rospecs[i].start_trigger == 1:
                    self._start(i)
            elif t == f.START_ROSPEC:
                self._start(i)
            elif t in (f.STOP_ROSPEC, f.DISABLE_ROSPEC, f.DELETE_ROSPEC):
                if self._active == i:
                    self._stop()
                if t != f.STOP_ROSPEC:
                    self._enabled.discard(i)
                if t == f.DELETE_ROSPEC:
                    del self._rospecs[i]
        self._send(f.response(t, mid))

    def gpi_changed(self, port: int, *, high: bool) -> None:
        """Tell the client; start an enabled ROSpec whose GPI start trigger this is."""
        utc_us = int(time.time() * 1e6)
        self._send(gpi_event(self._msg_id(), port, high=high, utc_us=utc_us))
        for i in sorted(self._enabled):
            if self._rospecs[i].start_gpi == (port, high) and self._active != i:
                self._start(i)

    def _start(self, rospec_id: int) -> None:
        self._stop()
        self._active = rospec_id
        self._sim.record.rospec_starts_mono.append(time.monotonic())
        self._sim._start_scenario()  # noqa: SLF001 - simulator internals
        self._report_task = self._sim._spawn(self._report_loop(), "llrp-sim-reports")  # noqa: SLF001

    def _stop(self) -> None:
        if self._active is not None:
            self._sim.record.rospec_stops_mono.append(time.monotonic())
        self._active = None
        if self._report_task is not None:
            self._report_task.cancel()
            self._report_task = None

    def _restart_keepalives(self) -> None:
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
        interval_ms = self._sim.record.keepalive_ms
        if interval_ms:
            self._keepalive_task = self._sim._spawn(  # noqa: SLF001 - simulator internals
                self._keepalive_loop(interval_ms / 1000.0), "llrp-sim-keepalive"
            )

    async def _keepalive_loop(self, interval_s: float) -> None:
        while not self._closed:
            await asyncio.sleep(interval_s)
            if not self._silent:
                self._send(f.keepalive(self._msg_id()))
                self._sim.record.keepalives_sent += 1

    async def _report_loop(self) -> None:
        sim = self._sim
        t0 = sim.scenario_time_s() or 0.0
        while not self._closed and self._active is not None:
            await asyncio.sleep(_TICK_S)
            t1 = min(sim.scenario_time_s() or 0.0, sim.scenario.duration_s)
            if t1 <= t0:
                if t1 >= sim.scenario.duration_s:
                    return
                continue
            reads = sim._reads(t0, t1)  # noqa: SLF001 - simulator internals
            t0 = t1
            if self._silent or not reads:
                continue
            spec = self._rospecs.get(self._active)
            sel = spec.selector if spec else f.ContentSelector()
            # A real reader told to report every N tags sends a report per N tag reads.
            per_report = _reads_per_report(spec, len(reads))
            for start in range(0, len(reads), per_report):
                chunk = reads[start : start + per_report]
                self._send(f.ro_access_report(self._msg_id(), chunk, sel, self._active))
                sim.record.reports_sent += 1
            sim.record.tag_reads_sent += len(reads)
            sim.record.epcs_sent.update(r.epc.hex().upper() for r in reads)
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    async def fault(self, fault: Fault) -> None:
        if fault.kind == "drop":
            self._writer.transport.abort()
            self.close()
        elif fault.kind == "silent":
            self._silent = True
        elif fault.kind == "corrupt":
            # A well-framed RO_ACCESS_REPORT whose TagReportData holds an AntennaID cut one
            # byte short: the frame boundary is intact, the body is not (sllurp: struct.error).
            body = f.tlv(f.P_TAG_REPORT_DATA, bytes([0x80 | f.TV_ANTENNA_ID, 0]))
            self._send(f.Message(f.RO_ACCESS_REPORT, self._msg_id(), body).to_bytes())
        elif fault.kind == "replay":
            for frame in self._sim._replay_frames(fault):  # noqa: SLF001 - simulator internals
                self._send(frame)
                self._sim.record.frames_replayed += 1
                if self._writer.transport.get_write_buffer_size() > 1 << 20:
                    with contextlib.suppress(ConnectionError):
                        await self._writer.drain()
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()
