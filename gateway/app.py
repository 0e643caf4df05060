"""The daemon: the only place that wires readers, pipeline, buffer and sync together."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.buffer.expected import ExpectedStore
from gateway.buffer.store import Buffer, BufferStats, Gap
from gateway.config import (
    Config,
    HidScanner,
    LlrpReader,
    ReaderSection,
    ReplayReader,
    SerialScanner,
    TcpScanner,
)
from gateway.domain.barcodes import Patterns
from gateway.domain.events import BarcodeScan, RawEvent
from gateway.domain.gs1_rules import BUILTIN_RULES, load_syntax_dictionary
from gateway.domain.kpi import CostFactors, KpiState
from gateway.domain.movements import Evidence, Item, Movement, movement_id
from gateway.domain.pipeline import Pipeline, PipelinePlan, StationPlan
from gateway.domain.signing import NonceCache, verify_command
from gateway.domain.smoothing import SmoothingSettings
from gateway.domain.wire import parse_rfc3339, render_movement_json, rfc3339
from gateway.errors import ConfigError, GatewayError, InputError, OutboxFull, ShutdownRequested
from gateway.expected_link import ExpectedLink
from gateway.logs import get_logger
from gateway.profiles import (
    DEFAULT_PROFILE_DIR,
    Profile,
    diff_profiles,
    find_profile,
    load_profile,
    parse_profile,
)
from gateway.readers.base import ReaderDriver
from gateway.readers.llrp.settings import LlrpSettings
from gateway.readers.replay import ReplayDriver
from gateway.runtime.backoff import Backoff
from gateway.runtime.health import HealthPolicy, HealthServer
from gateway.runtime.notify import SystemdNotifier
from gateway.runtime.supervisor import ReaderSlot, supervise_reader, wait_for_session
from gateway.sync.forwarder import Forwarder, IncomingMessage
from gateway.sync.topics import Topics

_log = get_logger("app")

BUFFER_FILE = "buffer.sqlite3"
INGEST_QUEUE_MAX = 50_000
# Visits close at the first tick after absent_s: the tick bounds read-to-publish latency.
PIPELINE_TICK_S = 0.025
JOURNAL_READ_EVERY_S = 1.0
PIPELINE_READ_ROWS = 2000
CHECKPOINT_EVERY_S = 1.0
STATS_EVERY_S = 1.0
RETENTION_EVERY_S = 600.0
MAX_COMMAND_BYTES = 4 * 1024 * 1024
ANNOUNCEMENTS_QUEUED_MAX = 64
KPI_STATE_KEY = "kpi-state"
PROFILE_HISTORY_KEY = "profile-history"
LATENCY_TRACKED_MAX = 20_000
REPLAY_MAX_ROWS = 100_000
PROFILE_HISTORY_MAX = 1000
PROFILE_SETTLE_S = 20.0
# Below this many reads per second before a change, a drop says nothing about the new profile.
MIN_RATE_FOR_ROLLBACK = 1.0


@dataclass(slots=True)
class DaemonView:
    """What a person (the demo, `gateway status`) wants to see of a running daemon."""

    readers: list[dict[str, Any]]
    buffer: dict[str, Any]
    forwarder: dict[str, Any]
    counters: dict[str, int]
    movements_by_type: dict[str, int]


class Daemon:
    """Runs the gateway until SIGTERM/SIGINT or `stop()`; constructors open nothing."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        install_signals: bool = True,
    ) -> None:
        self.config = config
        self._clock = clock
        self._monotonic = monotonic
        self._install_signals = install_signals
        self._stop = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._queue: asyncio.Queue[RawEvent] = asyncio.Queue(maxsize=INGEST_QUEUE_MAX)
        self.counters: Counter[str] = Counter()
        self.movements_by_type: Counter[str] = Counter()
        self.slots = [ReaderSlot(reader=r.id, kind=r.kind) for r in config.readers]
        self.profiles = load_reader_profiles(config)
        self.topics = Topics(
            prefix=config.mqtt.topic_prefix, site=config.gateway.site, gateway=config.gateway.id
        )
        self.buffer: Buffer | None = None
        self.pipeline: Pipeline | None = None
        self.forwarder: Forwarder | None = None
        self.stats: BufferStats | None = None
        self.expected: ExpectedLink | None = None
        self._cursor = 0
        self._checkpointed_cursor = 0
        self._last_checkpoint_mono = 0.0
        self._state_dirty = False
        self._gaps_pending = True
        self._notifier = SystemdNotifier()
        self._replay_epochs: dict[str, float] = {}
        self._render = self._make_renderer()
        self._factors = CostFactors.from_config(config.kpi.factors, config.kpi.gtin_prefixes)
        self.kpi = KpiState(self._factors)
        self.kpi_snapshot: dict[str, object] | None = None
        self._nonces = NonceCache()
        self._reader_tasks: list[asyncio.Task[None]] = []
        self._broker_down_since: float | None = None
        self._reader_down_since: dict[str, float] = {}
        self._read_times: dict[int, float] = {}
        self._absent_s = {s.id: s.absent_s for s in config.stations}
        self._pipeline_lock = asyncio.Lock()
        self._profile_lock = asyncio.Lock()
        self._rate_samples: dict[str, deque[tuple[float, int]]] = {}
        self._announcements: asyncio.Queue[IncomingMessage] = asyncio.Queue(
            maxsize=ANNOUNCEMENTS_QUEUED_MAX
        )

    # -- public --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the daemon to shut down cleanly (safe to call from the loop at any time)."""
        self._stop.set()

    async def stop_inputs(self) -> None:
        """Stop every reader, then let the pipeline turn what was read into movements."""
        for task in self._reader_tasks:
            task.cancel()
        await asyncio.gather(*self._reader_tasks, return_exceptions=True)
        await self._queue.join()
        await self._pipeline_step()

    async def refresh_stats(self) -> BufferStats | None:
        """Buffer statistics read now (not the once-a-second copy)."""
        if self.buffer is not None:
            self.stats = await self.buffer.stats()
        return self.stats

    async def run(self) -> int:
        """Open the buffer, start every task, run until stopped; return the exit code."""
        state_dir = self.config.gateway.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.buffer = await Buffer.open(
            state_dir / BUFFER_FILE,
            max_bytes=self.config.buffer.max_bytes,
            synchronous=self.config.buffer.synchronous,
            clock=self._clock,
        )
        if self.buffer.corrupt_moved_to is not None:
            self.counters["buffer_corrupt"] += 1
            _log.error(
                "buffer_was_corrupt_started_fresh",
                moved_to=str(self.buffer.corrupt_moved_to),
                advice="the damaged file is kept; send it to support, do not delete it",
            )
        self.expected = ExpectedLink(ExpectedStore(self.buffer), self._pipeline_lock)
        try:
            await self._restore_pipeline()
            await self._load_replay_epochs()
            await self._restore_kpis()
            self.stats = await self.buffer.stats()
            self.forwarder = Forwarder(
                self.buffer,
                self.config.mqtt,
                self.topics,
                client_id=self.config.mqtt.client_id
                or f"dock-gateway-{self.config.gateway.site}-{self.config.gateway.id}",
                health=self.health,
                on_message=self._on_message,
                on_published=self._published,
            )
            for slot in self.slots:
                slot.on_change = self.forwarder.refresh_status
            self._notifier.send("READY=1", f"STATUS={self.status_line()}")
            _log.info(
                "gateway_started",
                gateway=self.config.gateway.id,
                site=self.config.gateway.site,
                version=__version__,
                pending=self.stats.pending,
                cursor=self._cursor,
            )
            await self._run_tasks()
        finally:
            await self._shutdown()
        return 0

    def health(self) -> dict[str, object]:
        """Health for the status topic and the health endpoint."""
        stats = self.stats
        return {
            "version": __version__,
            "readers": {slot.reader: self._reader_health(slot) for slot in self.slots},
            "buffer": _stats_dict(stats) if stats is not None else None,
            "counters": dict(self.counters),
            "broker": self._broker_health(),
            "movements_by_type": dict(self.movements_by_type),
            "kpi": self.kpi_snapshot,
        }

    def _reader_health(self, slot: ReaderSlot) -> dict[str, Any]:
        since = self._reader_down_since.get(slot.reader)
        down_for_s = None if since is None else round(self._monotonic() - since, 1)
        return {**_reader_dict(slot), "down_for_s": down_for_s}

    def _broker_health(self) -> dict[str, Any] | None:
        if self.forwarder is None:
            return None
        broker = _public_fields(self.forwarder.stats)
        since = self._broker_down_since
        broker["down_for_s"] = None if since is None else round(self._monotonic() - since, 1)
        return broker

    def view(self) -> DaemonView:
        """A snapshot for people: readers, buffer, forwarder, counters."""
        forwarder_stats: dict[str, Any] = {}
        if self.forwarder is not None:
            forwarder_stats = _public_fields(self.forwarder.stats)
        return DaemonView(
            readers=[_reader_dict(slot) for slot in self.slots],
            buffer=_stats_dict(self.stats) if self.stats is not None else {},
            forwarder=forwarder_stats,
            counters=dict(self.counters),
            movements_by_type=dict(self.movements_by_type),
        )

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        stats = self.stats
        pending = stats.pending if stats is not None else 0
        connected = bool(self.forwarder is not None and self.forwarder.stats.connected)
        readers = ",".join(f"{slot.reader}:{slot.health().state}" for slot in self.slots)
        return f"broker={'up' if connected else 'down'} pending={pending} readers={readers}"

    # -- tasks ---------------------------------------------------------------------------------

    async def _run_tasks(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if self.config.health.enabled:
                actions = {"profile-apply": self._local_profile_apply}
                await stack.enter_async_context(
                    HealthServer(
                        self.config.health.listen,
                        self.health,
                        policy=HealthPolicy(
                            broker_down_max_s=self.config.health.broker_down_max_s,
                            reader_down_max_s=self.config.health.reader_down_max_s,
                            buffer_full_share=self.config.health.buffer_full_share,
                        ),
                        actions=actions,
                    )
                )
            await self._task_group()

    async def _task_group(self) -> None:
        assert self.forwarder is not None
        backoff = Backoff(min_s=0.5, max_s=30.0)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._wait_for_stop(), name="stop")
                forwarder = group.create_task(self.forwarder.run(), name="forwarder")
                watchdog_s = self._notifier.watchdog_interval_s()
                if watchdog_s is not None:
                    group.create_task(self._watchdog(watchdog_s, forwarder), name="watchdog")
                group.create_task(self._journal_loop(), name="journal")
                group.create_task(self._pipeline_loop(), name="pipeline")
                group.create_task(self._stats_loop(), name="stats")
                group.create_task(self._retention_loop(), name="retention")
                group.create_task(self._kpi_loop(), name="kpi")
                group.create_task(self._verify_buffer(), name="buffer-verify")
                if self.expected is not None:
                    sweep = self.expected.sweep_loop(self._clock)
                    group.create_task(sweep, name="expected-sweep")
                    group.create_task(self._announce_loop(), name="expected-announce")
                for reader, slot in zip(self.config.readers, self.slots, strict=True):
                    self._reader_tasks.append(
                        group.create_task(
                            supervise_reader(
                                self._driver_factory(reader), slot, self._ingest, backoff
                            ),
                            name=f"reader:{reader.id}",
                        )
                    )
        except* ShutdownRequested:
            _log.info("gateway_stopping")

    async def _wait_for_stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._stop.set)
        try:
            await self._stop.wait()
        finally:
            if self._install_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
        self._notifier.send("STOPPING=1")
        raise ShutdownRequested

    async def _watchdog(self, interval_s: float, forwarder: asyncio.Task[None]) -> None:
        """Ping systemd's watchdog only while this loop runs and the forwarder task lives."""
        while not forwarder.done():
            self._notifier.send("WATCHDOG=1")
            await asyncio.sleep(interval_s)
        _log.error("watchdog_stopped", reason="forwarder task ended")

    async def _ingest(self, event: RawEvent) -> None:
        await self._queue.put(event)

    async def _journal_loop(self) -> None:
        batch_s = self.config.buffer.journal_batch_ms / 1000
        batch_max = self.config.buffer.journal_batch_max
        while True:
            batch = [await self._queue.get()]
            if not self._queue.empty():
                # Busy: let a few milliseconds of reads gather into one transaction.
                await asyncio.sleep(batch_s)
            while len(batch) < batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            await self._append(batch)
            for _ in batch:
                self._queue.task_done()

    async def _append(self, batch: list[RawEvent]) -> None:
        assert self.buffer is not None
        try:
            await self.buffer.append_raw(batch)
            self.counters["raw_events_journaled"] += len(batch)
        except OutboxFull as exc:
            self.counters["raw_events_refused"] += len(batch)
            self._gaps_pending = True
            _log.warning(
                "input_refused_buffer_full",
                events=len(batch),
                needed_bytes=exc.needed_bytes,
                budget_bytes=exc.budget_bytes,
            )
        self._wakeup.set()

    async def _pipeline_loop(self) -> None:
        self._wakeup.set()  # a restart may have journaled rows past the checkpoint
        last_read = self._monotonic()
        while True:
            woken = True
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=PIPELINE_TICK_S)
            except TimeoutError:
                woken = False
            self._wakeup.clear()
            # A tick with no new events only closes visits: no need to ask SQLite.
            read_journal = woken or self._monotonic() - last_read >= JOURNAL_READ_EVERY_S
            if read_journal:
                last_read = self._monotonic()
            await self._pipeline_step(read_journal=read_journal)

    async def _pipeline_step(self, *, read_journal: bool = True) -> None:
        async with self._pipeline_lock:
            await self._pipeline_step_locked(read_journal=read_journal)

    async def _pipeline_step_locked(self, *, read_journal: bool) -> None:
        assert self.buffer is not None
        assert self.pipeline is not None
        movements: list[Movement] = []
        while read_journal:
            rows = await self.buffer.read_raw(self._cursor, PIPELINE_READ_ROWS)
            if self.expected is not None:
                await self.expected.prefetch([event for _, event in rows])
            for journal_id, event in rows:
                movements.extend(self.pipeline.feed(event, self._monotonic()))
                self._cursor = journal_id
            if len(rows) < PIPELINE_READ_ROWS or len(movements) >= PIPELINE_READ_ROWS:
                break
        if self.expected is not None and not read_journal:
            await self.expected.prefetch([])
        movements.extend(self.pipeline.tick(self._monotonic(), self._clock()))
        gaps: list[Gap] = []
        if self._gaps_pending:
            gaps = await self.buffer.unreported_gaps()
            self._gaps_pending = False
            movements.extend(self._gap_movement(gap) for gap in gaps)
        self._log_notices()
        now = self._monotonic()
        due = (
            self._cursor != self._checkpointed_cursor
            and now - self._last_checkpoint_mono >= CHECKPOINT_EVERY_S
        )
        if movements or due or self._state_dirty:
            await self._checkpoint(movements, gaps)

    async def _checkpoint(self, movements: list[Movement], gaps: Sequence[Gap] = ()) -> None:
        assert self.buffer is not None
        assert self.pipeline is not None
        state = json.dumps(self.pipeline.snapshot(), separators=(",", ":")).encode()
        seqs = await self.buffer.commit_pipeline(
            movements,
            cursor=self._cursor,
            state=state,
            render=self._render,
            gaps_reported=[gap.gap_id for gap in gaps],
            # Receipts and their RMA lines: one transaction, so a crash keeps both or neither.
            also=self.expected.updates_writer() if self.expected is not None else None,
        )
        self._last_checkpoint_mono = self._monotonic()
        self._checkpointed_cursor = self._cursor
        self._state_dirty = False
        if seqs:
            now_s = self._clock()
            for movement in movements:
                self.movements_by_type[movement.type] += 1
                self.kpi.add(movement, now_s)
            if len(seqs) == len(movements):
                self._note_read_times(movements, seqs)
            self.counters["movements"] += len(seqs)
            if self.forwarder is not None:
                self.forwarder.notify()

    def _note_read_times(self, movements: Sequence[Movement], seqs: Sequence[int]) -> None:
        """Remember when each new movement's evidence was complete, for the latency KPI."""
        for movement, seq in zip(movements, seqs, strict=True):
            ready_s = movement.evidence.last_seen_s
            if movement.evidence.source == "rfid":
                # A visit can only end absent_s after its last read: that wait is by design.
                ready_s += self._absent_s.get(movement.station, 0.0)
            self._read_times[seq] = ready_s
        while len(self._read_times) > LATENCY_TRACKED_MAX:
            self._read_times.pop(next(iter(self._read_times)))

    def _published(self, seq: int) -> None:
        ready_s = self._read_times.pop(seq, None)
        if ready_s is not None:
            self.kpi.record_latency(max(0.0, self._clock() - ready_s))

    async def _stats_loop(self) -> None:
        assert self.buffer is not None
        while True:
            await asyncio.sleep(STATS_EVERY_S)
            self.stats = await self.buffer.stats()
            self._notifier.send(f"STATUS={self.status_line()}")
            now = self._monotonic()
            connected = self.forwarder is not None and self.forwarder.stats.connected
            if connected:
                self._broker_down_since = None
            elif self._broker_down_since is None:
                self._broker_down_since = now
            for slot in self.slots:
                if slot.health().state in ("down", "silent", "rejected-config"):
                    self._reader_down_since.setdefault(slot.reader, now)
                else:
                    self._reader_down_since.pop(slot.reader, None)
                samples = self._rate_samples.setdefault(slot.reader, deque())
                samples.append((now, slot.health().events))
                while samples and now - samples[0][0] > self.config.profiles.rollback_watch_s:
                    samples.popleft()

    async def _verify_buffer(self) -> None:
        """The full integrity check of a large buffer, off the start-up path."""
        assert self.buffer is not None
        reason = await self.buffer.verify()
        if reason is not None:
            self.counters["buffer_corrupt"] += 1
            _log.error("buffer_corrupt_restart_to_move_aside", reason=reason)

    async def _kpi_loop(self) -> None:
        assert self.buffer is not None
        while True:
            await asyncio.sleep(self.config.mqtt.kpi_interval_s)
            await self._publish_kpis()

    async def _publish_kpis(self) -> None:
        assert self.buffer is not None
        assert self.pipeline is not None
        stats = self.stats
        if self.expected is not None:
            await self.expected.stats()
        self.kpi_snapshot = self.kpi.snapshot_kpis(
            self._clock(),
            open_rmas=self.expected.open_rmas if self.expected is not None else 0,
            oldest_unacked_age_s=stats.oldest_pending_age_s if stats is not None else None,
        )
        payload = json.dumps(
            {
                "gateway": self.config.gateway.id,
                "site": self.config.gateway.site,
                **self.kpi_snapshot,
            },
            default=str,
        ).encode()
        if self.forwarder is not None:
            await self.forwarder.publish_retained(self.topics.kpi, payload)
        await self.buffer.kv_put(KPI_STATE_KEY, json.dumps(self.kpi.snapshot()).encode())

    async def _restore_kpis(self) -> None:
        assert self.buffer is not None
        raw = await self.buffer.kv_get(KPI_STATE_KEY)
        if raw is None:
            return
        try:
            self.kpi = KpiState.restore(json.loads(raw), self._factors)
        except (InputError, ValueError):
            _log.error("kpi_state_unreadable_starting_empty")

    async def _retention_loop(self) -> None:
        assert self.buffer is not None
        while True:
            pruned = await self.buffer.prune_delivered(
                self._clock() - self.config.buffer.delivered_retention_s
            )
            if pruned:
                _log.info("delivered_movements_pruned", rows=pruned)
            await asyncio.sleep(RETENTION_EVERY_S)

    # -- commands ------------------------------------------------------------------------------

    async def _on_message(self, message: IncomingMessage) -> None:
        device = self.topics.scan_device(message.topic)
        if device is not None:
            await self._mqtt_scan(device, message)
            return
        name = self.topics.command_name(message.topic)
        if message.topic == self.topics.site_expected_returns:
            name = "expected-returns"  # the WMS announces once for every door of the site
        if name is None:
            self.counters["messages_unexpected"] += 1
            return
        if name == "expected-returns":
            # Their own task, in order: a large announcement must not hold up scans and acks.
            await self._announcements.put(message)
            return
        await self._handle_command(name, message)

    async def _announce_loop(self) -> None:
        while True:
            message = await self._announcements.get()
            try:
                await self._handle_command("expected-returns", message)
            except GatewayError as exc:
                # As for other commands: the buffer failed under this one; the next may succeed.
                _log.warning("incoming_message_failed", topic=message.topic[:200], error=str(exc))

    async def _handle_command(self, name: str, message: IncomingMessage) -> None:
        try:
            payload = self._verified(name, message.payload)
            result = await self._command(name, payload)
        except InputError as exc:
            self.counters["commands_rejected"] += 1
            if exc.what == "signature":
                self.counters["commands_refused_signature"] += 1
            _log.warning("command_rejected", command=name[:40], what=exc.what, reason=exc.reason)
            result = {"ok": False, "error": exc.reason}
        else:
            self.counters["commands_applied"] += 1
        if self.forwarder is not None:
            payload = json.dumps({"command": name[:40], **result}).encode()
            await self.forwarder.reply(message, name[:40], payload)

    def _verified(self, name: str, payload: bytes) -> bytes:
        """The command body, after its signature is checked when the config asks for signatures."""
        security = self.config.security
        if security.command_key_env is None:
            return payload
        key = security.command_key()
        if key is None:
            # Fail closed: signatures are required but the key is missing from the environment.
            raise InputError(
                "signature", f"${security.command_key_env} is not set; refusing commands"
            )
        return verify_command(
            name[:40],
            payload,
            key,
            now_s=self._clock(),
            window_s=security.command_window_s,
            nonces=self._nonces,
        )

    async def _command(self, name: str, payload: bytes) -> dict[str, Any]:
        body = _command_body(name, payload)
        assert self.pipeline is not None
        if name == "expected-returns":
            assert self.expected is not None
            # Durable before the reply: every chunk is its own transaction in the buffer.
            result = await self.expected.announce(body)
            return {"ok": True, "gateway": self.config.gateway.id, **result}
        if name == "replay":
            return {"ok": True, **(await self._replay(body))}
        if name == "profile-apply":
            return await self.apply_profile({**body, "source": "mqtt"})
        raise InputError("command", f"unknown command {name[:40]!r}")

    async def _local_profile_apply(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.apply_profile({**request, "source": "local"})
        except InputError as exc:
            return {"ok": False, "error": exc.reason}

    async def apply_profile(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply a profile to a running LLRP reader; roll back if rejected or if reads drop."""
        reader_id = request.get("reader")
        slot = next((s for s in self.slots if s.reader == reader_id), None)
        reader = next((r for r in self.config.readers if r.id == reader_id), None)
        if slot is None or not isinstance(reader, LlrpReader):
            raise InputError("profile-apply", f"no LLRP reader {str(reader_id)[:64]!r}")
        requested_by = str(request.get("requested_by") or "unknown")[:128]
        new = self._requested_profile(request)
        async with self._profile_lock:
            old = self.profiles[reader.id]
            entry: dict[str, Any] = {
                "at": rfc3339(self._clock()),
                "reader": reader.id,
                "requested_by": requested_by,
                "source": str(request.get("source", "unknown")),
                "old": {"name": old.name, "version": old.version},
                "new": {"name": new.name, "version": new.version},
                "changes": [list(c) for c in diff_profiles(old, new)],
            }
            baseline = self._read_rate(slot)
            outcome, reason = await self._switch_profile(slot, reader, new)
            if outcome == "applied":
                after = await self._watch_rate(slot)
                if baseline >= MIN_RATE_FOR_ROLLBACK and after < baseline * (
                    1 - self.config.profiles.rollback_drop_share
                ):
                    outcome = "rolled-back"
                    reason = f"read rate fell from {baseline:.1f}/s to {after:.1f}/s"
            if outcome != "applied":
                back, _ = await self._switch_profile(slot, reader, old)
                entry["rollback"] = back
            entry.update(outcome=outcome, reason=reason)
            await self._record_profile_change(entry)
        _log.info("profile_change", **{k: v for k, v in entry.items() if k != "changes"})
        return {"ok": outcome == "applied", **entry}

    def _requested_profile(self, request: dict[str, Any]) -> Profile:
        profile = request.get("profile")
        directory = self.config.profiles.dir or DEFAULT_PROFILE_DIR
        try:
            if isinstance(profile, dict):
                return parse_profile(profile, source="profile")
            name = profile if isinstance(profile, str) else request.get("name")
            if not isinstance(name, str) or not name.replace("-", "").isalnum():
                raise InputError("profile-apply", "give 'profile' (an object) or 'name'")
            return find_profile(name, directory)
        except ConfigError as exc:
            raise InputError("profile-apply", f"invalid profile: {exc.key}: {exc.reason}") from exc

    async def _switch_profile(
        self, slot: ReaderSlot, reader: LlrpReader, profile: Profile
    ) -> tuple[str, str | None]:
        """Put the profile in force with a new reader session; (outcome, why)."""
        self.profiles[reader.id] = profile
        sessions = slot.sessions
        slot.request_restart()
        state = await wait_for_session(slot, sessions, PROFILE_SETTLE_S)
        if state in ("inventorying", "connected"):
            return "applied", None
        if state == "rejected-config":
            return "rejected", slot.last_error
        return "failed", f"reader {state} after the change: {slot.last_error}"

    async def _watch_rate(self, slot: ReaderSlot) -> float:
        start = slot.health().events
        await asyncio.sleep(self.config.profiles.rollback_watch_s)
        return (slot.health().events - start) / self.config.profiles.rollback_watch_s

    def _read_rate(self, slot: ReaderSlot) -> float:
        samples = self._rate_samples.get(slot.reader)
        if not samples or len(samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    async def _record_profile_change(self, entry: dict[str, Any]) -> None:
        assert self.buffer is not None
        raw = await self.buffer.kv_get(PROFILE_HISTORY_KEY)
        history: list[dict[str, Any]] = json.loads(raw) if raw else []
        history = [*history, entry][-PROFILE_HISTORY_MAX:]
        await self.buffer.kv_put(PROFILE_HISTORY_KEY, json.dumps(history).encode())
        self.counters[f"profile_changes_{entry['outcome']}"] += 1
        if self.forwarder is not None:
            event = {"event": "profile-change", "gateway": self.config.gateway.id, **entry}
            await self.forwarder.publish_event(json.dumps(event, default=str).encode())

    async def _replay(self, body: dict[str, Any]) -> dict[str, Any]:
        """Publish kept movements again, with their original ids: from a seq, or a time range."""
        assert self.buffer is not None
        assert self.forwarder is not None
        if "from_seq" in body:
            from_seq = body["from_seq"]
            if isinstance(from_seq, bool) or not isinstance(from_seq, int) or from_seq < 0:
                raise InputError("replay", "'from_seq' must be a non-negative integer")
            rows = await self.buffer.rows_from(from_seq, REPLAY_MAX_ROWS, include_delivered=True)
            await self.forwarder.republish(rows)
            return {"republished": len(rows), "from_seq": from_seq}
        start, end = body.get("from"), body.get("to")
        if not isinstance(start, str) or not isinstance(end, (str, type(None))):
            raise InputError(
                "replay", "give 'from_seq', or 'from' (and optionally 'to') as RFC 3339"
            )
        start_s = parse_rfc3339(start)
        end_s = parse_rfc3339(end) if end is not None else self._clock()
        if end_s < start_s:
            raise InputError("replay", "'to' is before 'from'")
        rows = await self.buffer.rows_between(start_s, end_s, REPLAY_MAX_ROWS)
        await self.forwarder.republish(rows)
        return {"republished": len(rows), "from": start, "to": rfc3339(end_s)}

    async def _mqtt_scan(self, device: str, message: IncomingMessage) -> None:
        text = message.payload.decode("utf-8", errors="replace").strip()
        station = self._mqtt_scan_station(device)
        if not text or len(text) > 4096 or station is None:
            self.counters["bad_mqtt_scans"] += 1
            _log.warning(
                "mqtt_scan_rejected", device=device[:64], reason="empty, too long or no station"
            )
            return
        await self._ingest(
            BarcodeScan(
                reader=f"mqtt:{device}",
                station=station,
                data=text,
                at_s=self._clock(),
                device=device,
            )
        )

    def _mqtt_scan_station(self, device: str) -> str | None:
        for reader in self.config.readers:
            if isinstance(reader, TcpScanner) and device in reader.device_stations:
                return reader.device_stations[device]
        stations = self.config.stations
        return stations[0].id if len(stations) == 1 else None

    # -- set-up --------------------------------------------------------------------------------

    async def _restore_pipeline(self) -> None:
        assert self.buffer is not None
        cursor, state = await self.buffer.load_checkpoint()
        snapshot = None
        if state is not None:
            try:
                snapshot = json.loads(state)
            except ValueError:
                _log.error("pipeline_state_unreadable_starting_empty")
        registry = ExpectedLink.new_slice()
        self.pipeline = Pipeline(_pipeline_plan(self.config, self.profiles), snapshot, registry)
        if self.expected is not None:
            self.expected.attach(self.pipeline)
            if await self.expected.import_legacy():
                self._state_dirty = True  # the next checkpoint drops the registry from the state
        self._cursor = cursor
        self._checkpointed_cursor = cursor
        self._log_notices()

    async def _load_replay_epochs(self) -> None:
        """Fix each replay file's start time at its first run: restarts replay identical events."""
        assert self.buffer is not None
        for reader in self.config.readers:
            if not isinstance(reader, ReplayReader):
                continue
            key = f"replay-epoch:{reader.id}:{reader.file}"
            stored = await self.buffer.kv_get(key)
            if stored is None:
                epoch_s = self._clock()
                await self.buffer.kv_put(key, repr(epoch_s).encode())
            else:
                epoch_s = float(stored)
            self._replay_epochs[reader.id] = epoch_s

    def _driver_factory(self, reader: ReaderSection) -> Callable[[], ReaderDriver]:
        if isinstance(reader, ReplayReader):
            epoch_s = self._replay_epochs.get(reader.id, self._clock())

            def replay() -> ReaderDriver:
                return ReplayDriver(
                    reader.id,
                    reader.station,
                    reader.file,
                    rate_per_s=reader.rate_per_s,
                    epoch_s=epoch_s,
                )

            return replay
        if isinstance(reader, SerialScanner):
            from gateway.readers.serial import SerialScannerDriver  # noqa: PLC0415 - loads pyserial only when used

            return lambda: SerialScannerDriver(
                reader.id,
                reader.station,
                reader.url,
                baud=reader.baud,
                suffix=reader.suffix,
                inter_char_timeout_s=reader.inter_char_timeout_s,
                max_scan_bytes=reader.max_scan_bytes,
                clock=self._clock,
            )
        if isinstance(reader, TcpScanner):
            from gateway.readers.tcp import TcpScannerDriver  # noqa: PLC0415

            return lambda: TcpScannerDriver(
                reader.id,
                reader.station,
                reader.listen,
                devices=reader.devices,
                device_stations=reader.device_stations,
                max_line_bytes=reader.max_line_bytes,
                idle_timeout_s=reader.idle_timeout_s,
                clock=self._clock,
            )
        if isinstance(reader, HidScanner):
            from gateway.readers.hid.driver import HidScannerDriver  # noqa: PLC0415 - loads evdev only when used

            return lambda: HidScannerDriver(
                reader.id,
                reader.station,
                reader.device,
                gs_key=reader.gs_key,
                grab=reader.grab,
                max_scan_bytes=reader.max_scan_bytes,
                clock=self._clock,
            )
        if isinstance(reader, LlrpReader):
            return self._llrp_factory(reader)
        raise GatewayError(f"no driver for reader kind {reader.kind}")

    def _llrp_factory(self, reader: LlrpReader) -> Callable[[], ReaderDriver]:
        from gateway.readers.llrp.driver import LlrpDriver  # noqa: PLC0415 - loads sllurp only when used

        def make() -> ReaderDriver:
            settings = llrp_settings(self.profiles[reader.id], reader)
            return LlrpDriver(
                reader.id, reader.station, reader.host, reader.port, settings, clock=self._clock
            )

        return make

    def _make_renderer(self) -> Callable[[Movement, int], bytes]:
        site, gateway = self.config.gateway.site, self.config.gateway.id
        if self.config.mqtt.format == "epcis":
            from gateway.domain.epcis import EpcisContext, render_epcis  # noqa: PLC0415

            context = EpcisContext(
                site=site,
                gateway=gateway,
                station_uris={s.id: s.location_uri for s in self.config.stations if s.location_uri},
                uri_base=self.config.epcis.uri_base,
            )

            def render_epcis_or_json(movement: Movement, seq: int) -> bytes:
                return render_epcis(movement, seq, context) or render_movement_json(
                    movement, seq, site, gateway
                )

            return render_epcis_or_json
        return lambda movement, seq: render_movement_json(movement, seq, site, gateway)

    def _gap_movement(self, gap: Gap) -> Movement:
        return Movement(
            id=movement_id(self.config.gateway.id, f"gap:{gap.gap_id}", "", "gap", gap.first_at_s),
            type="gap",
            occurred_at_s=gap.last_at_s,
            station="",
            item=Item(code=f"gap-{gap.gap_id}"),
            evidence=Evidence(
                source="system",
                reader="buffer",
                first_seen_s=gap.first_at_s,
                last_seen_s=gap.last_at_s,
            ),
            detail=(
                ("refused_events", str(gap.refused_events)),
                ("reason", gap.reason),
            ),
        )

    def _log_notices(self) -> None:
        if self.pipeline is None:
            return
        for notice in self.pipeline.take_notices():
            self.counters[f"notice_{notice.event}"] += 1
            _log.info(notice.event, station=notice.station, **dict(notice.fields))

    async def _shutdown(self) -> None:
        deadline = self._monotonic() + 4.0
        if self.buffer is not None:
            with contextlib.suppress(GatewayError):
                leftovers: list[RawEvent] = []
                while not self._queue.empty():
                    leftovers.append(self._queue.get_nowait())
                if leftovers:
                    await self._append(leftovers)
                if self.pipeline is not None:
                    await self._pipeline_step()
                    await self._checkpoint([])
                await self.buffer.kv_put(KPI_STATE_KEY, json.dumps(self.kpi.snapshot()).encode())
        if self.forwarder is not None:
            remaining = max(0.5, deadline - self._monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.forwarder.stop(), timeout=remaining)
        if self.buffer is not None:
            with contextlib.suppress(GatewayError):
                self.stats = await self.buffer.stats()
            await self.buffer.close()
        self._notifier.close()
        _log.info("gateway_stopped")


def load_reader_profiles(config: Config) -> dict[str, Profile]:
    """The profile of every LLRP reader, validated; ConfigError names the reader and the field."""
    directory = config.profiles.dir or DEFAULT_PROFILE_DIR
    profiles: dict[str, Profile] = {}
    for index, reader in enumerate(config.readers):
        if not isinstance(reader, LlrpReader):
            continue
        path = directory / f"{reader.profile}.toml"
        if not path.exists():
            raise ConfigError(
                f"readers.{index}.profile", f"no profile {reader.profile!r} in {directory}"
            )
        profiles[reader.id] = load_profile(path)
    return profiles


_SEARCH_MODES = {
    "reader-selected": 0,
    "single-target": 1,
    "dual-target": 2,
    "single-target-suppressed": 3,
}


def llrp_settings(profile: Profile, reader: LlrpReader) -> LlrpSettings:
    """What the LLRP driver sends, from a technician's profile."""
    antennas = tuple(a.port for a in profile.antennas if a.enabled)
    impinj = profile.model.startswith("impinj")
    return LlrpSettings(
        antennas=antennas,
        power_dbm_by_antenna=tuple((a.port, a.power_dbm) for a in profile.antennas if a.enabled),
        mode_identifier=profile.reader.reader_mode,
        session=profile.reader.session,
        tag_population=profile.reader.tag_population,
        search_mode=_SEARCH_MODES[profile.reader.search_mode] if impinj else None,
        report_every_n_tags=profile.reader.report_every_n_tags,
        keepalive_s=profile.reader.keepalive_s,
        max_clock_skew_s=reader.clock_drift_max_s,
        tag_filter_masks=tuple(profile.filters.epc_prefixes),
    )


def _pipeline_plan(config: Config, profiles: Mapping[str, Profile] | None = None) -> PipelinePlan:
    stations = {
        s.id: StationPlan(
            id=s.id,
            kind=s.kind,
            smoothing=SmoothingSettings(
                rssi_floor_dbm=s.rssi_floor_dbm,
                absent_s=s.absent_s,
                stray_dwell_s=s.stray_dwell_s,
                min_confidence=s.min_confidence,
                reversal_hold_s=s.reversal_hold_s,
                stray_rssi_dbm=s.stray_rssi_dbm,
                leak_margin_db=s.leak_margin_db,
            ),
            rescan_window_s=s.rescan_window_s,
            rma_timeout_s=s.rma_timeout_s,
            location=s.location_uri,
        )
        for s in config.stations
    }
    zones = {r.id: r.zones for r in config.readers if isinstance(r, LlrpReader) and r.zones}
    p = config.patterns
    patterns = Patterns.compile(
        rma=p.rma, rma_close=p.rma_close, location=p.location, disposition=p.disposition
    )
    rules = load_syntax_dictionary(p.gs1_dictionary) if p.gs1_dictionary else BUILTIN_RULES
    floors = {reader: p.reader.rssi_floor_dbm for reader, p in (profiles or {}).items()}
    return PipelinePlan(
        gateway=config.gateway.id,
        stations=stations,
        zones=zones,
        patterns=patterns,
        rules=rules,
        reader_floors_dbm=floors,
    )


def _command_body(name: str, payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_COMMAND_BYTES:
        raise InputError(name[:40], f"payload larger than {MAX_COMMAND_BYTES} bytes")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(name[:40], "payload is not JSON") from exc
    if not isinstance(body, dict):
        raise InputError(name[:40], "payload must be a JSON object")
    return body


def _reader_dict(slot: ReaderSlot) -> dict[str, Any]:
    health = slot.health()
    return {
        "reader": health.reader,
        "kind": health.kind,
        "state": health.state,
        "events": health.events,
        "bad_input": health.bad_input,
        "reconnects": health.reconnects,
        "last_error": health.last_error,
    }


def _stats_dict(stats: BufferStats) -> dict[str, Any]:
    return {
        "pending": stats.pending,
        "oldest_pending_age_s": stats.oldest_pending_age_s,
        "last_seq": stats.last_seq,
        "used_bytes": stats.used_bytes,
        "budget_bytes": stats.budget_bytes,
        "journal_rows": stats.journal_rows,
        "delivered_total": stats.delivered_total,
        "gaps_total": stats.gaps_total,
        "refused_events_total": stats.refused_events_total,
    }


def _public_fields(obj: object) -> dict[str, Any]:
    fields = getattr(obj, "__dataclass_fields__", None)
    if fields is not None:
        return {name: getattr(obj, name) for name in fields}
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


def state_path(config: Config) -> Path:
    """Where the buffer file of this config lives."""
    return config.gateway.state_dir / BUFFER_FILE
