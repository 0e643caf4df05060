"""The LLRP reader driver over sllurp: the only module of the product that imports sllurp.

sllurp runs its own thread. Its callbacks do one thing: hand a tuple to the event loop with
`call_soon_threadsafe`; everything else (mapping, counting, failure decisions) happens on the loop.
What sllurp does not do for us, and how we make up for it:
- it never notices a silent reader: we watch KEEPALIVEs and reads and give up after two intervals;
- its reader thread dies silently when a decoder raises (struct.error on dx101_e's events): our
  client subclass frames the stream itself and skips a frame that fails to decode, counting it;
- `disconnect()` waits for replies that a dead reader never sends: bounded, then a hard close;
- with `report_every_n_tags` it also sets an AISpec stop trigger that restarts the inventory
  every N tags (missed tags on Zebra, sllurp #218): we set N on the ROReportSpec only;
- its reader thread is not a daemon: ours is, so the process always exits;
- its generic decoder is slow for the one message a busy portal floods us with: tag reports of
  the common shape are decoded by `tag_reports` (struct only), the rest still by sllurp.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self

from sllurp.llrp import LLRPClient, LLRPMessage, LLRPReaderClient, LLRPReaderConfig
from sllurp.llrp import LLRPReaderState as _St
from sllurp.llrp_errors import ReaderConfigurationError
from sllurp.llrp_proto import LLRPError, LLRPROSpec

from gateway.domain.events import RawEvent
from gateway.errors import FrameError, ReaderRejectedConfig, ReaderUnavailable
from gateway.logs import get_logger
from gateway.readers.base import ReaderHealth
from gateway.readers.llrp.mapping import MappedRead, map_report, map_tag
from gateway.readers.llrp.settings import LlrpSettings
from gateway.readers.llrp.tag_reports import ReportedTag, decode_tag_reports, is_ro_access_report

_log = get_logger("llrp")
_HEADER_LEN = 10
# A profile's power may fall between two entries of the reader's table; beyond this it is wrong.
_POWER_TOLERANCE_DB = 0.5
_MAX_FRAME_BYTES = 16 << 20  # no real report comes near; beyond it the length field is garbage
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
# What sllurp's decoders raise on bad input besides its own LLRPError.
_DECODE_ERRORS = (LLRPError, struct.error, ValueError, KeyError, IndexError, TypeError)

Notify = Callable[[tuple[Any, ...]], None]


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
    if settings.power_dbm_by_antenna:
        cfg["tx_power_dbm"] = {a: float(p) for a, p in settings.power_dbm_by_antenna}
    if settings.search_mode is not None:
        cfg["impinj_search_mode"] = settings.search_mode
    if settings.tag_filter_masks:
        cfg["tag_filter_mask"] = list(settings.tag_filter_masks)
    return LLRPReaderConfig(cfg)


class LlrpDriver:
    """`async with` connects and starts inventory; `events()` yields TagReads; loss raises."""

    def __init__(
        self,
        reader_id: str,
        station: str,
        host: str,
        port: int,
        settings: LlrpSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._id = reader_id
        self._station = station
        self._host = host
        self._port = port
        self._settings = settings
        self._clock = clock
        self._health = ReaderHealth(reader=reader_id, kind="llrp")
        self._client: _Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_tags: deque[MappedRead] = deque()
        self._wake = asyncio.Event()
        self._inventorying = asyncio.Event()
        self._failure: Exception | None = None
        self._last_activity = 0.0
        self._closing = False
        self._session = 0  # a fresh sllurp client per session; late notices of old ones ignored
        self.dropped_reads = 0
        self.frame_errors = 0
        self.clock_replaced = 0

    @property
    def id(self) -> str:
        """The configured reader id."""
        return self._id

    @property
    def health(self) -> ReaderHealth:
        """Live health of this driver."""
        return self._health

    async def __aenter__(self) -> Self:
        """Connect and start inventory; ReaderUnavailable or ReaderRejectedConfig on failure."""
        self._loop = asyncio.get_running_loop()
        self._reset()
        self._health.state = "connecting"
        self._session += 1
        session = self._session
        if session > 1:
            self._health.reconnects += 1
        self._client = _Client(
            self._host,
            self._port,
            sllurp_config(self._settings),
            lambda item: self._notify(session, item),
        )
        try:
            await _in_daemon_thread(self._client.connect, self._settings.connect_timeout_s)
        except (OSError, TimeoutError, ReaderConfigurationError) as exc:
            await self._hard_close()
            self._health.state = "down"
            self._health.last_error = str(exc)
            raise ReaderUnavailable(self._id, f"cannot connect: {exc}") from exc
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                while not self._inventorying.is_set() and self._failure is None:
                    self._wake.clear()
                    await self._wake.wait()
        except TimeoutError:
            self._failure = ReaderUnavailable(self._id, "no inventory after connect")
        except asyncio.CancelledError:
            # Cancelled mid-handshake: sllurp's polite stop could hang here, so close hard now.
            self._client.hard_disconnect()
            self._client = None
            self._health.state = "down"
            raise
        if self._failure is not None:
            failure = self._failure
            await self._hard_close()
            self._health.state = (
                "rejected-config" if isinstance(failure, ReaderRejectedConfig) else "down"
            )
            self._health.last_error = str(failure)
            raise failure
        self._health.state = "inventorying"
        self._last_activity = self._loop.time()
        _log.info("reader_inventorying", reader=self._id, host=self._host, port=self._port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop politely if the reader answers, else hard-close; returns within ~6 s."""
        self._closing = True
        client = self._client
        try:
            if client is not None and self._failure is None and client.is_alive():
                await _in_daemon_thread(
                    lambda: client.disconnect(timeout=self._settings.disconnect_timeout_s),
                    self._settings.disconnect_timeout_s + 0.5,
                )
        except (OSError, TimeoutError, ReaderConfigurationError) as err:
            _log.warning("reader_disconnect_forced", reader=self._id, reason=str(err))
        finally:
            if client is not None:
                client.hard_disconnect()  # immediate, also when we are being cancelled
        await self._hard_close()
        if self._health.state not in ("silent", "rejected-config", "down"):
            self._health.state = "idle"

    async def events(self) -> AsyncIterator[RawEvent]:
        """Yield TagReads until the reader is lost (ReaderUnavailable) or goes silent."""
        assert self._loop is not None, "use inside `async with`"
        silence_s = 2.0 * self._settings.keepalive_s
        while True:
            # One tag at a time off the queue, so a consumer that stops mid-batch loses nothing.
            while self._pending_tags:
                mapped = self._pending_tags.popleft()
                if mapped.clock_replaced:
                    self._note_clock_replaced()
                self._health.events += 1
                self._health.last_event_at_s = mapped.read.at_s
                yield mapped.read
            if self._failure is not None:
                if isinstance(self._failure, ReaderUnavailable):
                    self._health.state = "down"
                raise self._failure
            remaining = self._activity_s() + silence_s - self._loop.time()
            if remaining <= 0:
                self._health.state = "silent"
                self._health.last_error = "no reads and no keepalive"
                _log.warning("reader_silent", reader=self._id, silence_s=silence_s)
                self._failure = ReaderUnavailable(self._id, "silent: no reads and no keepalive")
                raise self._failure
            self._wake.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            except TimeoutError:
                continue

    # -- private --

    def _reset(self) -> None:
        self._pending_tags.clear()
        self._wake = asyncio.Event()
        self._inventorying = asyncio.Event()
        self._failure = None
        self._closing = False

    def _map(self, tag: dict[str, Any], received_at_s: float) -> MappedRead | None:
        try:
            mapped = map_tag(
                tag,
                reader=self._id,
                station=self._station,
                received_at_s=received_at_s,
                max_clock_skew_s=self._settings.max_clock_skew_s,
            )
        except FrameError as err:
            self._count_bad("tag", err.reason)
            return None
        return mapped

    def _map_report(self, tags: list[ReportedTag], received_at_s: float) -> list[MappedRead]:
        report = map_report(
            tags,
            reader=self._id,
            station=self._station,
            received_at_s=received_at_s,
            max_clock_skew_s=self._settings.max_clock_skew_s,
        )
        for _ in range(report.rejected):
            self._count_bad("tag", "EPC is not hex")
        return report.reads

    def _note_clock_replaced(self) -> None:
        self.clock_replaced += 1
        self._health.detail["clock_replaced"] = str(self.clock_replaced)
        if self.clock_replaced == 1:
            _log.warning("reader_clock_replaced", reader=self._id)

    def _count_bad(self, what: str, reason: str) -> None:
        self.frame_errors += 1
        self._health.bad_input += 1
        self._health.detail["frame_errors"] = str(self.frame_errors)
        log = _log.warning if self.frame_errors == 1 else _log.debug
        log("llrp_frame_rejected", reader=self._id, what=what, reason=reason)

    def _notify(self, session: int, item: tuple[Any, ...]) -> None:
        """Called on sllurp's thread: the one bridge into the loop; never raises."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._on_item, session, item)
        except RuntimeError:
            return  # the loop is closed: the driver is gone, nothing to tell

    def _on_item(self, session: int, item: tuple[Any, ...]) -> None:
        if session != self._session:
            return
        kind = item[0]
        assert self._loop is not None
        if kind in ("tags", "report"):
            self._last_activity = self._loop.time()
            self._take_tags(kind, item[1])
        elif kind == "keepalive":
            self._last_activity = self._loop.time()
        elif kind == "inventorying":
            self._last_activity = self._loop.time()
            self._inventorying.set()
        elif kind == "frame_error":
            self._count_bad("frame", str(item[1]))
        elif kind == "rejected":
            if self._failure is None:
                self._failure = ReaderRejectedConfig(self._id, str(item[1]))
        elif kind == "lost" and self._failure is None and not self._closing:
            self._failure = ReaderUnavailable(self._id, str(item[1]))
            self._health.last_error = str(item[1])
        self._wake.set()

    def _activity_s(self) -> float:
        """When the reader last showed life, in loop time; bytes still being decoded count."""
        client = self._client
        if client is None:
            return self._last_activity
        if client.decoding:
            # A report of thousands of tags can take sllurp seconds: the reader is not silent.
            assert self._loop is not None
            return self._loop.time()
        return self._last_activity

    def _take_tags(self, kind: str, tags: list[Any]) -> None:
        if len(self._pending_tags) + len(tags) > self._settings.max_pending_reads:
            self.dropped_reads += len(tags)
            self._health.detail["dropped_reads"] = str(self.dropped_reads)
            _log.warning("reads_dropped", reader=self._id, count=len(tags))
        elif kind == "report":
            self._pending_tags.extend(self._map_report(tags, self._clock()))
        else:
            received_at_s = self._clock()
            for tag in tags:
                read = self._map(tag, received_at_s)
                if read is not None:
                    self._pending_tags.append(read)

    async def _hard_close(self) -> None:
        client = self._client
        if client is None:
            return
        client.hard_disconnect()
        thread = client.thread
        if thread is not None and thread.is_alive():
            await _in_daemon_thread(lambda: thread.join(1.0), 1.5)
        self._client = None


class _Client(LLRPReaderClient):  # type: ignore[misc]  # sllurp is untyped
    """sllurp's client with a daemon reader thread, contained decoding and lifecycle notices."""

    def __init__(self, host: str, port: int, config: LLRPReaderConfig, notify: Notify) -> None:
        super().__init__(host, port, config, timeout=5.0)
        self._notify = notify
        self.thread: threading.Thread | None = None
        self.llrp = _Protocol(config, self.send_data, self._on_llrp_state_changed)
        self._buf = bytearray()
        self._close_lock = threading.Lock()
        # Read by the loop's silence check: a whole frame being decoded means not silent.
        self.decoding = False
        self.add_tag_report_callback(lambda _r, tags: notify(("tags", tags)))
        # sllurp answers KEEPALIVE inside handleMessage and tells no one; message callbacks run
        # for every decoded message just before it, so this is where we see the reader breathe.
        self.add_message_callback("KEEPALIVE", lambda _r, _m: notify(("keepalive",)))
        for name in ("ADD_ROSPEC_RESPONSE", "SET_READER_CONFIG_RESPONSE", "ENABLE_ROSPEC_RESPONSE"):
            self.add_message_callback(name, self._check_status)
        self.add_state_callback(_St.STATE_INVENTORYING, lambda _r, _s: notify(("inventorying",)))
        self.add_disconnected_callback(lambda _r: notify(("lost", "disconnected")))

    def _check_status(self, _reader: object, lmsg: LLRPMessage) -> None:
        if not lmsg.isSuccess():
            status = lmsg.msgdict[lmsg.getName()].get("LLRPStatus", {})
            text = status.get("ErrorDescription", b"")
            if isinstance(text, bytes):
                text = text.decode("utf-8", errors="replace")
            self._notify(("rejected", f"{lmsg.getName()}: {status.get('StatusCode')} {text}"))

    def connect(self, start_main_loop: bool = True) -> None:
        """Connect the socket and start a daemon reader thread."""
        self.disconnect_requested.clear()
        self._connect_socket()
        if not start_main_loop:
            return
        self._stop_main_loop.clear()
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

    def main_loop(self) -> None:
        """sllurp's loop; whatever ends it, the driver hears about it."""
        try:
            super().main_loop()
        finally:
            self._notify(("lost", "reader thread ended"))

    def raw_data_received(self, data: bytes) -> None:
        """Frame the stream ourselves so one undecodable frame is skipped, not fatal."""
        self._buf += data
        while len(self._buf) >= _HEADER_LEN:
            (length,) = struct.unpack_from("!I", self._buf, 2)
            if length < _HEADER_LEN or length > _MAX_FRAME_BYTES:
                # No way to find the next frame boundary: give the connection up.
                self._notify(("frame_error", f"bad length {length}"))
                self._buf.clear()
                self._notify(("lost", "unframeable stream"))
                self.hard_disconnect()
                return
            if len(self._buf) < length:
                return
            frame = bytes(self._buf[:length])
            del self._buf[:length]
            self.decoding = True
            try:
                self._frame_received(frame)
            finally:
                self.decoding = False

    def _frame_received(self, frame: bytes) -> None:
        """Decode one whole frame: tag reports of the common shape lean, the rest by sllurp."""
        if is_ro_access_report(frame):
            tags = decode_tag_reports(frame)
            if tags is not None:
                # What sllurp's tag report callback would have seen, without its decoder.
                self._notify(("report", tags))
                return
        try:
            lmsg = LLRPMessage(msgbytes=frame)
        except _DECODE_ERRORS as err:
            self._notify(("frame_error", f"{type(err).__name__}: {err}"))
            return
        self._on_llrp_message_received(lmsg)
        try:
            self.llrp.handleMessage(lmsg)
        except ReaderConfigurationError as err:
            self._notify(("rejected", str(err)))
            raise
        except _DECODE_ERRORS as err:
            self._notify(("frame_error", f"{type(err).__name__}: {err}"))


class _Protocol(LLRPClient):  # type: ignore[misc]  # sllurp is untyped
    """sllurp's state machine with the report trigger set without an AISpec stop trigger."""

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


async def _in_daemon_thread(fn: Callable[[], object], timeout_s: float) -> None:
    """Run blocking `fn` on a daemon thread; TimeoutError after `timeout_s` (thread abandoned)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(err: BaseException | None) -> None:
        if done.done():
            return
        if err is None:
            done.set_result(None)
        else:
            done.set_exception(err)

    def run() -> None:
        err: BaseException | None = None
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, not swallowed
            err = exc
        try:
            loop.call_soon_threadsafe(settle, err)
        except RuntimeError:
            return  # the loop has closed; nobody waits any more

    threading.Thread(target=run, name="llrp-blocking-call", daemon=True).start()
    async with asyncio.timeout(timeout_s):
        await done
