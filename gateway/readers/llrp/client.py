"""sllurp's reader client with our own reader thread: a chunk per socket read, into the bridge.

With `driver.py`, the only module of the product that imports sllurp. sllurp's `main_loop` reads
4 KiB at a time and calls back once per frame; ours reads up to `_CHUNK_BYTES`, frames and
decodes everything one read delivered (tag reports of the common shape by the lean `tag_reports`
decoder, the rest by sllurp) and hands it to the bridge in ONE put, stamped with the time it was
received. While the bridge is full that put blocks, so the thread stops reading its socket and the
reader (the TCP window) holds its reports. When the socket has nothing more to read, the thread
puts a heard mark stamped just before it looked; while the socket stays idle, one every
`_IDLE_MARK_S` (the bridge keeps only the latest of consecutive marks).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sllurp.llrp import LLRPClient, LLRPMessage, LLRPReaderClient, LLRPReaderConfig
from sllurp.llrp import LLRPReaderState as _St
from sllurp.llrp_errors import ReaderConfigurationError
from sllurp.llrp_proto import LLRPError, LLRPROSpec, Param_struct

from gateway.domain.events import InputHeard
from gateway.readers.llrp.frames import START_ROSPEC, STOP_ROSPEC, Message
from gateway.readers.llrp.gpio import gpo_write
from gateway.readers.llrp.settings import LlrpSettings
from gateway.readers.llrp.tag_reports import decode_tag_reports, is_ro_access_report
from gateway.runtime.bridge import ThreadBridge

_HEADER_LEN: Final = 10
# One socket read: a busy reader's backlog comes in a few reads, not thousands of 4 KiB ones.
_CHUNK_BYTES: Final = 64 << 10
# While the socket is idle, how often a heard mark tells the pipeline time has moved on.
_IDLE_MARK_S: Final = 0.1
# A profile's power may fall between two entries of the reader's table; beyond this it is wrong.
_POWER_TOLERANCE_DB: Final = 0.5
# Message ids of our own requests (GPO writes), far from sllurp's counter that starts at 1.
_OWN_MSG_ID_BASE: Final = 0x7F00_0000
_MAX_FRAME_BYTES: Final = (
    16 << 20
)  # no real report comes near; beyond it the length field is garbage
# Every tag report field the product reads (the RFID bench's bare-sllurp baseline asks the same).
ALL_TAG_CONTENT = {
    "EnableROSpecID": True,
    "EnableSpecIndex": False,
    "EnableInventoryParameterSpecID": False,
    "EnableAntennaID": True,
    "EnableChannelIndex": True,
    "EnablePeakRSSI": True,
    "EnableFirstSeenTimestamp": True,
    "EnableLastSeenTimestamp": True,
    "EnableTagSeenCount": True,
    "EnableAccessSpecID": False,
}
# sllurp registers GPITriggerValue with PeriodicTriggerValue's type (180); LLRP says 181.
Param_struct["GPITriggerValue"]["type"] = 181
# What sllurp's decoders raise on bad input besides its own LLRPError.
_DECODE_ERRORS = (LLRPError, struct.error, ValueError, KeyError, IndexError, TypeError)

Notice = tuple[Any, ...]
"""("report", [ReportedTag]) | ("tags", [sllurp tag dict]) | ("keepalive",) | ("inventorying",) |
("frame_error", reason) | ("rejected", reason) | ("lost", reason) | ("gpi", port, high) |
("request_failed", reason)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one socket read delivered, decoded: notices in stream order, stamped on receipt."""

    received_at_s: float
    notices: tuple[Notice, ...]
    reads: int


BridgeItem = Chunk | InputHeard


def sllurp_config(settings: LlrpSettings) -> LLRPReaderConfig:
    """The sllurp reader config for `settings` (reconnect off, every tag field asked for)."""
    cfg: dict[str, Any] = {
        "antennas": list(settings.antennas),
        "tx_power": 0,
        "session": settings.session,
        "tag_population": settings.tag_population,
        "mode_identifier": settings.mode_identifier,
        "report_every_n_tags": settings.report_every_n_tags,
        "tag_content_selector": dict(ALL_TAG_CONTENT),
        "keepalive_interval": int(settings.keepalive_s * 1000),
        "reconnect": False,
        "reconnect_retries": 0,
        "start_inventory": True,
        "reset_on_connect": True,
    }
    if settings.trigger_gpi is not None:
        # Readers report a GPI's events, and its start trigger fires, only with the port enabled.
        cfg["event_selector"] = {"GPIEvent": True}
        cfg["gpi_ports_config"] = {settings.trigger_gpi: True}
    if settings.power_dbm_by_antenna:
        cfg["tx_power_dbm"] = {a: float(p) for a, p in settings.power_dbm_by_antenna}
    if settings.search_mode is not None:
        cfg["impinj_search_mode"] = settings.search_mode
    if settings.tag_filter_masks:
        cfg["tag_filter_mask"] = list(settings.tag_filter_masks)
    return LLRPReaderConfig(cfg)


class LlrpClient(LLRPReaderClient):  # type: ignore[misc]  # sllurp is untyped
    """sllurp's client with our daemon reader thread, contained decoding, one put per read."""

    def __init__(
        self,
        host: str,
        port: int,
        config: LLRPReaderConfig,
        *,
        bridge: ThreadBridge[BridgeItem],
        reader: str,
        clock: Callable[[], float],
        gpo_ports: tuple[int, ...] = (),
        gpi_ports: tuple[int, ...] = (),
        start_by_gateway: bool = False,
    ) -> None:
        super().__init__(host, port, config, timeout=5.0)
        self._bridge = bridge
        self._reader = reader
        self._clock = clock
        self.thread: threading.Thread | None = None
        self.llrp = _Protocol(config, self.send_data, self._on_llrp_state_changed)
        # Triggered: the ROSpec waits for its GPI start trigger, or (start_gpi None) for us.
        self.llrp.triggered = bool(gpi_ports)
        self.llrp.start_gpi = gpi_ports[0] if gpi_ports and not start_by_gateway else None
        self._buf = bytearray()
        self._close_lock = threading.Lock()
        # What the reader thread decoded from the current socket read, put as one Chunk.
        self._notices: list[Notice] = []
        self._reads = 0
        # time.monotonic() when the thread last found its socket empty (the loop's silence
        # check: a thread that has not looked since cannot tell a silent reader).
        self.idle_seen_mono = 0.0
        self.bytes_received = 0
        self.refused_reads = 0  # read after the driver closed the bridge: it will never get them
        self._gpo_ports = gpo_ports
        self._gpi_ports = gpi_ports
        # Frames the loop asked us to send; the reader thread sends them (one writer per socket).
        self._posted: deque[bytes] = deque()
        self._own_ids: set[int] = set()
        self._next_own_id = _OWN_MSG_ID_BASE
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self.add_message_callback("GET_READER_CAPABILITIES_RESPONSE", self._check_gpio)
        self.add_message_callback("READER_EVENT_NOTIFICATION", self._check_gpi_event)
        self.add_message_callback("GET_READER_CONFIG_RESPONSE", self._check_gpi_state)
        self.add_tag_report_callback(lambda _r, tags: self._notice(("tags", tags)))
        # sllurp answers KEEPALIVE inside handleMessage and tells no one; message callbacks run
        # for every decoded message just before it, so this is where we see the reader breathe.
        self.add_message_callback("KEEPALIVE", lambda _r, _m: self._notice(("keepalive",)))
        for name in (
            "ADD_ROSPEC_RESPONSE",
            "SET_READER_CONFIG_RESPONSE",
            "ENABLE_ROSPEC_RESPONSE",
            "STOP_ROSPEC_RESPONSE",
            "START_ROSPEC_RESPONSE",
        ):
            self.add_message_callback(name, self._check_status)
        self.add_state_callback(
            _St.STATE_INVENTORYING, lambda _r, _s: self._notice(("inventorying",))
        )
        self.add_disconnected_callback(lambda _r: self._notice(("lost", "disconnected")))

    def connect(self, start_main_loop: bool = True) -> None:
        """Connect the socket and start a daemon reader thread."""
        self.disconnect_requested.clear()
        self._connect_socket()
        if not start_main_loop:
            return
        self._stop_main_loop.clear()
        self._wake = socket.socketpair()
        for end in self._wake:
            end.setblocking(False)
        self.thread = threading.Thread(
            target=self.main_loop, name=f"sllurp-{self._host}:{self._port}", daemon=True
        )
        self._socket_thread = self.thread
        self.thread.start()

    def hard_disconnect(self) -> None:
        """Stop the reader thread and close the socket; safe from any thread, any time."""
        # sllurp's version reads self._socket twice; called from our thread and its own at
        # once, the second read can see None. Take the socket once, under a lock.
        with self._close_lock:
            self._stop_main_loop.set()
            sock: Any = vars(self).get("_socket")  # sllurp attribute, untyped
            self._socket = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def write_gpo(self, states: Mapping[int, bool]) -> None:
        """Queue a SET_READER_CONFIG writing these GPO ports; the reader thread sends it."""
        self._post(lambda msg_id: gpo_write(msg_id, states))

    def start_rospec(self) -> None:
        """Queue a START_ROSPEC for our ROSpec (the beam is high, and no edge will start it)."""
        self._post(lambda msg_id: Message(START_ROSPEC, msg_id, struct.pack("!I", 1)).to_bytes())

    def stop_rospec(self) -> None:
        """Queue a STOP_ROSPEC for our ROSpec (its GPI start trigger stays armed)."""
        self._post(lambda msg_id: Message(STOP_ROSPEC, msg_id, struct.pack("!I", 1)).to_bytes())

    def _post(self, frame: Callable[[int], bytes]) -> None:
        """Queue one of our own requests for the reader thread; its reply is ours, not sllurp's."""
        self._next_own_id += 1
        self._own_ids.add(self._next_own_id)
        self._posted.append(frame(self._next_own_id))
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
                wake[1].send(b"\0")

    def main_loop(self) -> None:
        """Read until stopped or lost; whatever ends it, the driver hears about it."""
        try:
            self._read_until_stopped()
        except ReaderConfigurationError:
            self.hard_disconnect()  # the driver was told why ("rejected")
        except OSError as err:
            self._notice(("lost", f"socket: {err}"))
        finally:
            self._notice(("lost", "reader thread ended"))
            self._flush(self._clock())
            wake, self._wake = self._wake, None
            for end in wake or ():
                end.close()

    # -- private --

    def _read_until_stopped(self) -> None:
        """Read a chunk whenever the socket has bytes; a heard mark whenever it has none."""
        sock: Any = vars(self).get("_socket")
        if sock is None:
            return
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if self._wake is not None:
            poller.register(self._wake[0], select.POLLIN)
        sock_fd = sock.fileno()
        idle_ms = int(_IDLE_MARK_S * 1000)
        while not self._stop_main_loop.is_set():
            self._send_posted()
            # Stamped before looking: every byte that arrived by then is read and put already.
            # The daemon's monotonic clock: a stepped wall clock must not move the marks.
            looked_mono = time.monotonic()
            if not _readable(poller.poll(0), sock_fd):
                self.idle_seen_mono = looked_mono
                self._bridge.put_mark(InputHeard(self._reader, looked_mono))
                if not _readable(poller.poll(idle_ms), sock_fd):
                    continue  # idle, or woken to send what the loop posted
            data = sock.recv(_CHUNK_BYTES)
            if not data:
                self._notice(("lost", "connection closed by the reader"))
                return
            received_at_s = self._clock()
            self.bytes_received += len(data)
            try:
                self._frame_chunk(data)
            finally:
                self._flush(received_at_s)

    def _send_posted(self) -> None:
        """Send what the loop posted, from this thread, the only one writing to the socket."""
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(BlockingIOError):
                wake[0].recv(4096)
        while self._posted:
            self.send_data(self._posted.popleft())

    def _notice(self, notice: Notice) -> None:
        """Collect into the current chunk on the reader thread; from elsewhere, put it alone."""
        if threading.current_thread() is self.thread:
            self._notices.append(notice)
            if notice[0] in ("report", "tags"):
                self._reads += len(notice[1])
            return
        self._bridge.put(Chunk(self._clock(), (notice,), 0))

    def _flush(self, received_at_s: float) -> None:
        """Hand what this read decoded to the bridge in one put (blocks while it is full)."""
        if not self._notices:
            return
        chunk = Chunk(received_at_s, tuple(self._notices), self._reads)
        self._notices = []
        self._reads = 0
        if not chunk.reads and self._bridge.closed:
            return  # keepalives and the like, for a driver that has gone: nothing lost
        # Refused: the driver is gone (it counts these as lost); keep reading so that a polite
        # stop still gets its replies.
        if not self._bridge.put(chunk, max(1, chunk.reads)):
            self.refused_reads += chunk.reads

    def _frame_chunk(self, data: bytes) -> None:
        """Frame the stream ourselves so one undecodable frame is skipped, not fatal."""
        self._buf += data
        while len(self._buf) >= _HEADER_LEN:
            (length,) = struct.unpack_from("!I", self._buf, 2)
            if length < _HEADER_LEN or length > _MAX_FRAME_BYTES:
                # No way to find the next frame boundary: give the connection up.
                self._notice(("frame_error", f"bad length {length}"))
                self._buf.clear()
                self._notice(("lost", "unframeable stream"))
                self.hard_disconnect()
                return
            if len(self._buf) < length:
                return
            frame = bytes(self._buf[:length])
            del self._buf[:length]
            self._frame_received(frame)

    def _frame_received(self, frame: bytes) -> None:
        """Decode one whole frame: tag reports of the common shape lean, the rest by sllurp."""
        if is_ro_access_report(frame):
            tags = decode_tag_reports(frame)
            if tags is not None:
                # What sllurp's tag report callback would have seen, without its decoder.
                self._notice(("report", tags))
                return
        try:
            lmsg = LLRPMessage(msgbytes=frame)
        except _DECODE_ERRORS as err:
            self._notice(("frame_error", f"{type(err).__name__}: {err}"))
            return
        self._on_llrp_message_received(lmsg)
        if self._own_reply(lmsg):
            return  # answers our GPO write: sllurp's state machine never asked for it
        try:
            self.llrp.handleMessage(lmsg)
        except ReaderConfigurationError as err:
            self._notice(("rejected", str(err)))
            raise
        except _DECODE_ERRORS as err:
            self._notice(("frame_error", f"{type(err).__name__}: {err}"))

    def _own_reply(self, lmsg: LLRPMessage) -> bool:
        msg_id = lmsg.msgdict.get(lmsg.getName(), {}).get("ID")
        if msg_id in self._own_ids:
            self._own_ids.discard(msg_id)
            return True
        return False

    def _check_gpio(self, _reader: object, lmsg: LLRPMessage) -> None:
        """Refuse GPO or GPI ports the reader lacks, as any other impossible setting."""
        caps = lmsg.msgdict[lmsg.getName()].get("GeneralDeviceCapabilities", {})
        gpio = caps.get("GPIOCapabilities", {})
        gpis, gpos = int(gpio.get("NumGPIs", 0)), int(gpio.get("NumGPOs", 0))
        for kind, ports, count in (("GPO", self._gpo_ports, gpos), ("GPI", self._gpi_ports, gpis)):
            for port in ports:
                if not 1 <= port <= count:
                    self._notice(
                        ("rejected", f"{kind} port {port}: the reader has {count} {kind}s")
                    )

    def _check_gpi_event(self, _reader: object, lmsg: LLRPMessage) -> None:
        data = lmsg.msgdict[lmsg.getName()].get("ReaderEventNotificationData", {})
        event = data.get("GPIEvent")
        if event:
            self._notice(("gpi", int(event["GPIPortNumber"]), bool(event["GPIEvent"])))

    def _check_gpi_state(self, _reader: object, lmsg: LLRPMessage) -> None:
        """The trigger's GPI level at connect (GPIPortCurrentState.GPIState: 0 low, 1 high)."""
        states = lmsg.msgdict[lmsg.getName()].get("GPIPortCurrentState", [])
        for state in states if isinstance(states, list) else [states]:
            level = state.get("GPIState")  # 2: unknown
            if int(state.get("GPIPortNum", 0)) in self._gpi_ports and level in (0, 1):
                self._notice(("gpi", int(state["GPIPortNum"]), level == 1))

    def _check_status(self, _reader: object, lmsg: LLRPMessage) -> None:
        msg_id = lmsg.msgdict.get(lmsg.getName(), {}).get("ID")
        if msg_id in self._own_ids and not lmsg.isSuccess():
            status = lmsg.msgdict[lmsg.getName()].get("LLRPStatus")
            self._notice(("request_failed", f"{lmsg.getName()}: {status}"))
            return
        if not lmsg.isSuccess():
            status = lmsg.msgdict[lmsg.getName()].get("LLRPStatus", {})
            text = status.get("ErrorDescription", b"")
            if isinstance(text, bytes):
                text = text.decode("utf-8", errors="replace")
            self._notice(("rejected", f"{lmsg.getName()}: {status.get('StatusCode')} {text}"))


def _readable(events: list[tuple[int, int]], fd: int) -> bool:
    return any(ready_fd == fd for ready_fd, _ in events)


class _Protocol(LLRPClient):  # type: ignore[misc]  # sllurp is untyped
    """sllurp's state machine with the report trigger set without an AISpec stop trigger."""

    triggered = False  # the ROSpec waits for a GPI instead of starting at once
    start_gpi: int | None = None  # the ROSpec starts when this GPI goes high

    def setTxPowerDbm(self, tx_pow_dbm: Any = None) -> None:  # noqa: N802 - sllurp's name
        """Refuse a power outside the reader's own table (sllurp would pick the nearest entry)."""
        table = [p for p in self.tx_power_table if p]
        if tx_pow_dbm and table:
            low, high = min(table), max(table)
            for antenna, dbm in tx_pow_dbm.items():
                if not low - _POWER_TOLERANCE_DB <= dbm <= high + _POWER_TOLERANCE_DB:
                    msg = (
                        f"antenna {antenna}: {dbm} dBm is outside the reader's power table "
                        f"({low}-{high} dBm)"
                    )
                    raise ReaderConfigurationError(msg)
        super().setTxPowerDbm(tx_pow_dbm)

    def getROSpec(self, force_new: bool = False) -> Any:  # noqa: N802 - sllurp's name
        """Build sllurp's ROSpec without its tag-count stop trigger; report every N tags."""
        current: Any = self.rospec
        if current and not force_new:
            return current
        c: Any = self.config
        kwargs: dict[str, Any] = {
            "duration_sec": c.duration,
            "report_every_n_tags": None,
            "report_timeout_ms": 0,
            "tx_power": c.tx_power,
            "antennas": c.antennas,
            "tag_content_selector": c.tag_content_selector,
            "session": c.session,
            "tari": c.tari,
            "tag_population": c.tag_population,
            "frequencies": c.frequencies,
        }
        if c.tag_filter_mask is not None:
            kwargs["tag_filter_mask"] = c.tag_filter_mask
        if c.impinj_search_mode is not None:
            kwargs["impinj_search_mode"] = c.impinj_search_mode
        rospec = LLRPROSpec(self.reader_mode, 1, **kwargs)
        # sllurp would count N tags as an AISpec stop condition too; N belongs to the report only.
        rospec["ROReportSpec"]["N"] = int(c.report_every_n_tags or 1)
        if self.start_gpi is not None:
            # The reader starts the inventory when the beam breaks; the driver stops it
            # linger_s after the beam clears (GPI_With_Timeout's timeout runs from the start).
            rospec["ROBoundarySpec"]["ROSpecStartTrigger"] = {
                "ROSpecStartTriggerType": "GPI",
                "GPITriggerValue": {"GPIPortNum": self.start_gpi, "GPIEvent": True, "Timeout": 0},
            }
        elif self.triggered:  # the driver starts it with START_ROSPEC on the GPI event
            rospec["ROBoundarySpec"]["ROSpecStartTrigger"] = {"ROSpecStartTriggerType": "Null"}
        self.rospec: Any = rospec
        return rospec

    # sllurp sends first and then sets its state and registers the callback; called from our
    # thread (disconnect) while its reader thread handles the reply, the reply can come first and
    # the polite stop never completes. Same steps, in the safe order.
    def stopPolitely(self, onCompletion: Any = None, disconnect: bool = False) -> None:  # noqa: N802, N803 - sllurp's names
        """Delete all AccessSpecs, then all ROSpecs; `onCompletion` runs after the last reply."""
        if disconnect:
            self.disconnecting = True

        def deleted_accessspecs(state: Any, is_success: bool, *args: Any) -> None:
            if is_success:
                self.stopAllROSpecs(onCompletion)
            elif onCompletion:
                onCompletion(state, is_success, *args)

        self.setState(_St.STATE_SENT_DELETE_ACCESSSPEC)
        self._deferreds["DELETE_ACCESSSPEC_RESPONSE"].append(deleted_accessspecs)
        self.sendMessage({"DELETE_ACCESSSPEC": {"AccessSpecID": 0}})

    def stopAllROSpecs(self, onCompletion: Any = None) -> None:  # noqa: N802, N803 - sllurp's names
        """Delete all ROSpecs; `onCompletion` runs after the reply."""

        def deleted_rospecs(state: Any, is_success: bool, *args: Any) -> None:
            if onCompletion:
                onCompletion(state, is_success, *args)

        self.setState(_St.STATE_SENT_DELETE_ROSPEC)
        self._deferreds["DELETE_ROSPEC_RESPONSE"].append(deleted_rospecs)
        self.sendMessage({"DELETE_ROSPEC": {"ROSpecID": 0}})
