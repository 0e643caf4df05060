"""The LLRP reader driver over sllurp: with `client.py`, the only modules importing sllurp.

sllurp's client runs our own reader thread (`client.LlrpClient`): everything one socket read
delivers is framed, decoded and handed to the one thread bridge (`runtime/bridge.py`) in one put,
stamped when received; mapping, counting and failure decisions happen on the loop. The bridge
holds at most `max_pending_reads` reads: when it is full the thread stops reading its socket and
the reader holds its reports, so no read is dropped. `events()` yields the reads and, in order
with them, heard marks (`InputHeard`): the time before which every read the reader sent is in
hand, so the pipeline closes visits only on time it has heard.
What sllurp does not do for us, and how we make up for it:
- it never notices a silent reader: we watch KEEPALIVEs and reads and give up after two intervals
  (heard marks are no sign of life), once the reader thread has found its socket empty since, so
  a frozen or starved process, or a report of thousands of tags being decoded, is no silence;
- its reader thread dies silently when a decoder raises (struct.error on dx101_e's events): our
  client frames the stream itself and skips a frame that fails to decode, counting it;
- `disconnect()` waits for replies that a dead reader never sends: bounded, then a hard close;
- with `report_every_n_tags` it also sets an AISpec stop trigger that restarts the inventory
  every N tags (missed tags on Zebra, sllurp #218): we set N on the ROReportSpec only;
- its reader thread is not a daemon and wakes the loop once per frame: ours is a daemon, so the
  process always exits, and wakes the loop at most once per batch;
- its generic decoder is slow for the one message a busy portal floods us with: tag reports of
  the common shape are decoded by `tag_reports` (struct only), the rest still by sllurp.
GPIO: the station lights' GPO writes (`GpoLatch`) and START/STOP_ROSPEC of a triggered inventory
are posted to the reader thread, the one writer of the socket; GPI events arrive as notices.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from sllurp.llrp_errors import ReaderConfigurationError

from gateway.domain.events import InputHeard
from gateway.errors import FrameError, ReaderRejectedConfig, ReaderUnavailable
from gateway.logs import get_logger
from gateway.readers.base import ReaderHealth, ReaderItem
from gateway.readers.llrp.client import BridgeItem, Chunk, LlrpClient, Notice, sllurp_config
from gateway.readers.llrp.gpio import GpoLatch
from gateway.readers.llrp.mapping import MappedRead, map_report, map_tag
from gateway.readers.llrp.settings import LlrpSettings
from gateway.readers.llrp.tag_reports import ReportedTag
from gateway.runtime.bridge import ThreadBridge

_log = get_logger("llrp")
# An overdue silence check waits this long for the reader thread to look at its socket again.
_SILENCE_RECHECK_S = 0.1


class LlrpDriver:
    """`async with` connects and starts inventory; `events()` yields TagReads and heard marks."""

    def __init__(
        self,
        reader_id: str,
        station: str,
        host: str,
        port: int,
        settings: LlrpSettings,
        *,
        clock: Callable[[], float] = time.time,
        outputs: GpoLatch | None = None,
    ) -> None:
        self._id = reader_id
        self._outputs = outputs
        self._station = station
        self._host = host
        self._port = port
        self._settings = settings
        self._clock = clock
        self._health = ReaderHealth(reader=reader_id, kind="llrp")
        self._client: LlrpClient | None = None
        self._bridge: ThreadBridge[BridgeItem] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Taken off the bridge, not yielded yet (reads mapped only when their turn comes, so a
        # big batch does not hold the loop): the bridge is asked again only once both are empty.
        self._pending: deque[_Unmapped | InputHeard] = deque()
        self._mapped: deque[MappedRead] = deque()
        self._inventorying = False
        self._failure: Exception | None = None
        self._last_activity = 0.0
        self._closing = False
        self._session = 0
        self._lost_now = 0  # reads of this session the consumer will never get
        self.lost_reads = 0
        self.frame_errors = 0
        self.clock_replaced = 0
        # Triggered inventory: when the RF went on (loop time; None: off), seconds on before,
        # and the pending stop after the beam cleared.
        self._rf_on_since: float | None = None
        self._rf_s = 0.0
        self._linger: asyncio.TimerHandle | None = None

    @property
    def id(self) -> str:
        """The configured reader id."""
        return self._id

    @property
    def health(self) -> ReaderHealth:
        """Live health of this driver."""
        return self._health

    @property
    def pushed_back(self) -> bool:
        """Whether the reader thread is waiting for room in the bridge (not reading its socket)."""
        return self._bridge is not None and self._bridge.producer_waiting

    @property
    def bytes_received(self) -> int:
        """Bytes the current session's reader thread has read off its socket."""
        return self._client.bytes_received if self._client is not None else 0

    @property
    def inventory_s(self) -> float:
        """Seconds this driver has had the reader inventorying (RF on), the current run too."""
        on_since = self._rf_on_since
        live = 0.0 if on_since is None or self._loop is None else self._loop.time() - on_since
        return self._rf_s + live

    async def __aenter__(self) -> Self:
        """Connect and start inventory; ReaderUnavailable or ReaderRejectedConfig on failure."""
        self._loop = asyncio.get_running_loop()
        self._reset()
        self._health.state = "connecting"
        self._session += 1
        if self._session > 1:
            self._health.reconnects += 1
        bridge: ThreadBridge[BridgeItem] = ThreadBridge(
            self._settings.max_pending_reads, name=f"llrp:{self._id}"
        )
        self._bridge = bridge
        self._client = LlrpClient(
            self._host,
            self._port,
            sllurp_config(self._settings),
            bridge=bridge,
            reader=self._id,
            clock=self._clock,
            gpo_ports=self._settings.gpo_ports,
            gpi_ports=() if self._settings.trigger_gpi is None else (self._settings.trigger_gpi,),
            start_by_gateway=self._settings.trigger_by_gateway,
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
                while not self._inventorying and self._failure is None and not bridge.closed:
                    self._take(await bridge.get_batch())
        except TimeoutError:
            self._failure = ReaderUnavailable(self._id, "no inventory after connect")
        except asyncio.CancelledError:
            # Cancelled mid-handshake: sllurp's polite stop could hang here, so close hard now.
            self._client.hard_disconnect()
            self._client = None
            self._close_bridge()
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
        if self._outputs is not None:
            self._outputs.attach(self._write_gpo)  # the lights as they should be now
        trigger = self._settings.trigger_gpi
        if trigger is None:
            self._rf_on_since = self._loop.time()  # inventory runs as long as we are connected
        elif self._health.detail.get(f"gpi_{trigger}") == "high":
            # The beam was broken already when we connected: no edge will start the ROSpec.
            self._client.start_rospec()
            self._rf_on_since = self._loop.time()
            self._health.detail["inventory"] = "on"
        else:
            self._health.detail["inventory"] = f"waiting for GPI {trigger}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop politely if the reader answers, else hard-close; returns within ~6 s."""
        self._closing = True
        if self._outputs is not None:
            self._outputs.detach(self._write_gpo)
        self._rf_off()
        # Nobody takes reads any more: release the reader thread so a polite stop gets replies.
        self._close_bridge()
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

    async def events(self) -> AsyncIterator[ReaderItem]:
        """Yield TagReads and heard marks in order until the reader is lost or goes silent."""
        assert self._bridge is not None, "use inside `async with`"
        bridge = self._bridge
        while True:
            # One at a time off the queues, so a consumer that stops mid-batch loses nothing.
            while self._mapped or self._pending:
                if not self._mapped:
                    item = self._pending.popleft()
                    if isinstance(item, InputHeard):
                        yield item
                        continue
                    self._mapped.extend(self._map(item))
                    continue
                mapped = self._mapped.popleft()
                if mapped.clock_replaced:
                    self._note_clock_replaced()
                self._health.events += 1
                self._health.last_event_at_s = mapped.read.at_s
                yield mapped.read
            if self._failure is not None:
                if isinstance(self._failure, ReaderUnavailable):
                    self._health.state = "down"
                raise self._failure
            self._take(bridge.take_nowait() or await self._wait_for_batch(bridge))

    # -- private --

    def _write_gpo(self, states: Mapping[int, bool]) -> None:
        """Hand a GPO write to the session's reader thread (never blocks the loop)."""
        client = self._client
        if client is not None:
            client.write_gpo(states)
            _log.debug("gpo_write_posted", reader=self._id, states=dict(states))

    async def _wait_for_batch(self, bridge: ThreadBridge[BridgeItem]) -> list[BridgeItem]:
        """The next batch ([] when the wait timed out); ReaderUnavailable on a silent reader."""
        assert self._loop is not None
        silence_s = 2.0 * self._settings.keepalive_s
        deadline = self._last_activity + silence_s
        remaining = deadline - self._loop.time()
        if remaining <= 0 and not self._idle_since(deadline):
            # Overdue, but the reader thread has not found its socket empty since: the process
            # was frozen or starved, or a big chunk is being decoded. Let the thread look first.
            remaining = _SILENCE_RECHECK_S
        elif remaining <= 0:
            self._health.state = "silent"
            self._health.last_error = "no reads and no keepalive"
            _log.warning("reader_silent", reader=self._id, silence_s=silence_s)
            self._failure = ReaderUnavailable(self._id, "silent: no reads and no keepalive")
            raise self._failure
        try:
            async with asyncio.timeout(remaining):
                return await bridge.get_batch()
        except TimeoutError:
            return []

    def _reset(self) -> None:
        for key in [k for k in self._health.detail if k.startswith("gpi_")]:
            del self._health.detail[key]  # levels of a past session; this one reports its own
        self._pending.clear()
        self._mapped.clear()
        self._inventorying = False
        self._failure = None
        self._closing = False

    def _take(self, batch: list[BridgeItem]) -> None:
        """Queue a batch off the bridge for `events()`; note what its notices tell of the reader."""
        pending = self._pending
        for item in batch:
            if isinstance(item, InputHeard):
                if pending and isinstance(pending[-1], InputHeard):
                    pending[-1] = item  # the later mark says all the earlier one did
                else:
                    pending.append(item)
                continue
            for notice in item.notices:
                self._on_notice(notice, item)
        if self._rf_on_since is not None:
            self._health.detail["inventory_s"] = f"{self.inventory_s:.1f}"
        if not batch and self._failure is None and self._bridge is not None and self._bridge.closed:
            self._failure = ReaderUnavailable(self._id, "driver closed")

    def _on_notice(self, notice: Notice, chunk: Chunk) -> None:
        kind = notice[0]
        assert self._loop is not None
        if kind in ("report", "tags"):
            self._last_activity = self._loop.time()
            self._pending.append(_Unmapped(kind, notice[1], chunk.received_at_s))
        elif kind == "keepalive":
            self._last_activity = self._loop.time()
        elif kind == "inventorying":
            self._last_activity = self._loop.time()
            self._inventorying = True
        elif kind == "request_failed":
            self._health.detail["request_failed"] = str(notice[1])
            _log.warning("reader_request_failed", reader=self._id, reason=str(notice[1]))
        elif kind == "gpi":
            self._on_gpi(int(notice[1]), high=bool(notice[2]), at_s=chunk.received_at_s)
        elif kind == "frame_error":
            self._count_bad("frame", str(notice[1]))
        elif kind == "rejected":
            if self._failure is None:
                self._failure = ReaderRejectedConfig(self._id, str(notice[1]))
        elif kind == "lost" and self._failure is None and not self._closing:
            self._failure = ReaderUnavailable(self._id, str(notice[1]))
            self._health.last_error = str(notice[1])

    def _on_gpi(self, port: int, *, high: bool, at_s: float) -> None:
        """Note a GPI level; the trigger's GPI starts (the reader did) or stops the inventory."""
        self._health.detail[f"gpi_{port}"] = "high" if high else "low"
        _log.info("reader_gpi", reader=self._id, port=port, high=high, at_s=at_s)
        if port != self._settings.trigger_gpi or self._health.state != "inventorying":
            return  # during the handshake: only noted; __aenter__ acts on the level at its end
        assert self._loop is not None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if high:
            if self._rf_on_since is None:
                if self._settings.trigger_by_gateway and self._client is not None:
                    self._client.start_rospec()
                # else the ROSpec's GPI start trigger has started it on the reader already
                self._rf_on_since = self._loop.time()
            self._health.detail["inventory"] = "on"
        elif self._rf_on_since is not None:
            self._linger = self._loop.call_later(
                self._settings.trigger_linger_s, self._stop_inventory
            )

    def _stop_inventory(self) -> None:
        """The beam has been clear for linger_s: stop the ROSpec (its start trigger stays armed)."""
        self._linger = None
        client = self._client
        if client is None or self._closing:
            return
        client.stop_rospec()
        self._rf_off()
        self._health.detail["inventory"] = f"waiting for GPI {self._settings.trigger_gpi}"
        _log.info("reader_inventory_stopped", reader=self._id, inventory_s=self.inventory_s)

    def _rf_off(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._rf_on_since is not None and self._loop is not None:
            self._rf_s += self._loop.time() - self._rf_on_since
            self._rf_on_since = None
        self._health.detail["inventory_s"] = f"{self._rf_s:.1f}"

    def _map(self, reads: _Unmapped) -> list[MappedRead]:
        if reads.kind == "report":
            return self._map_report(reads.tags, reads.received_at_s)
        return self._map_tags(reads.tags, reads.received_at_s)

    def _map_tags(self, tags: list[dict[str, Any]], received_at_s: float) -> list[MappedRead]:
        reads: list[MappedRead] = []
        for tag in tags:
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
                continue
            reads.append(mapped)
        return reads

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

    def _idle_since(self, at_s: float) -> bool:
        """Whether the reader thread found its socket empty at or after `at_s` (loop time)."""
        client = self._client
        return client is None or client.idle_seen_mono >= at_s

    def _close_bridge(self) -> None:
        """Close the session's bridge; reads queued or taken but never yielded are lost."""
        bridge = self._bridge
        if bridge is None:
            return
        left = bridge.close()
        self._lost_now += sum(item.reads for item in left if isinstance(item, Chunk))
        self._lost_now += len(self._mapped)
        self._lost_now += sum(len(i.tags) for i in self._pending if isinstance(i, _Unmapped))
        self._pending.clear()
        self._mapped.clear()

    async def _hard_close(self) -> None:
        client = self._client
        self._close_bridge()
        if client is not None:
            client.hard_disconnect()
            thread = client.thread
            if thread is not None and thread.is_alive():
                await _in_daemon_thread(lambda: thread.join(1.0), 1.5)
            # Read while the driver was closing: the bridge refused them, the thread counted.
            self._lost_now += client.refused_reads
            self._client = None
        if self._lost_now:
            # The consumer left with these unread (a restart, a shutdown): never in silence.
            self.lost_reads += self._lost_now
            self._health.detail["lost_reads"] = str(self.lost_reads)
            _log.warning("reads_lost_at_close", reader=self._id, count=self._lost_now)
            self._lost_now = 0


@dataclass(frozen=True, slots=True)
class _Unmapped:
    """Reads of one tag report as decoded on the reader thread, stamped when received."""

    kind: str  # "report": lean-decoded ReportedTags; "tags": sllurp's tag dicts
    tags: list[Any]
    received_at_s: float


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
