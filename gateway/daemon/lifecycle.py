"""The daemon's life: open the buffer, run every task in one task group, shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

from gateway import __version__
from gateway.buffer.keys import buffer_path
from gateway.buffer.store import Buffer, BufferStats
from gateway.config import Config
from gateway.console.tags import TagsInView
from gateway.daemon import views
from gateway.daemon.running import Running, start_parts
from gateway.daemon.shared import LOG_COMPONENT, Shared, Tallies
from gateway.daemon.wiring import driver_factory, gpo_ports
from gateway.errors import BufferUnavailable, GatewayError, InputError, ShutdownRequested
from gateway.logs import get_logger
from gateway.profiles import load_reader_profiles
from gateway.runtime.backoff import Backoff
from gateway.runtime.health import HealthPolicy, HealthServer
from gateway.runtime.notify import SystemdNotifier
from gateway.runtime.supervisor import ReaderSlot, supervise_reader
from gateway.sync.topics import Topics

_log = get_logger(LOG_COMPONENT)

SHUTDOWN_BUDGET_S = 4.0
# The drain at shutdown: ample for a full queue, and with the rest inside systemd's
# TimeoutStopSec (10 s) even when the buffer is stalled and the drain has to give up.
DRAIN_BUDGET_S = 5.0
EXIT_OK = 0
EXIT_FAILED = 1
# SQLite's primary result codes that `buffer_failed` gives advice for.
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26


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
        self.slots = [ReaderSlot(reader=r.id, kind=r.kind) for r in config.readers]
        self._shared = Shared(
            config=config,
            slots=self.slots,
            profiles=load_reader_profiles(config),
            topics=Topics(
                prefix=config.mqtt.topic_prefix,
                site=config.gateway.site,
                gateway=config.gateway.id,
            ),
            tallies=Tallies(
                tags_in_view=TagsInView(
                    config.console.tags_in_view_max, config.console.tag_expire_s
                )
            ),
            clock=clock,
            monotonic=monotonic,
        )
        self._install_signals = install_signals
        self._stop = asyncio.Event()
        self._notifier = SystemdNotifier()
        self._reader_tasks: list[asyncio.Task[None]] = []
        # None until `run()` has opened the buffer: the views show "not running yet".
        self._running: Running | None = None

    @property
    def stats(self) -> BufferStats | None:
        """Buffer statistics as of the last once-a-second read."""
        return self._shared.tallies.stats

    @property
    def kpi_snapshot(self) -> dict[str, object] | None:
        """The KPIs as last published."""
        return self._shared.tallies.kpi_snapshot

    def stop(self) -> None:
        """Ask the daemon to shut down cleanly (safe to call from the loop at any time)."""
        self._stop.set()

    async def stop_inputs(self) -> None:
        """Stop every reader, then let the pipeline turn what was read into movements."""
        for task in self._reader_tasks:
            task.cancel()
        await asyncio.gather(*self._reader_tasks, return_exceptions=True)
        if self._running is not None:
            await self._running.flow.settle()

    async def refresh_stats(self) -> BufferStats | None:
        """Buffer statistics read now (not the once-a-second copy)."""
        if self._running is not None:
            self._shared.tallies.stats = await self._running.buffer.stats()
        return self._shared.tallies.stats

    async def apply_profile(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply a profile to a running LLRP reader; roll back if rejected or if reads drop."""
        if self._running is None:
            raise InputError("profile-apply", "the daemon is not running")
        return await self._running.switcher.apply(request)

    async def announce_expected(self, command: dict[str, Any]) -> dict[str, Any]:
        """Apply an `expected-returns` command as if it came over MQTT (the demo without broker)."""
        if self._running is None:
            raise InputError("expected-returns", "the daemon is not running")
        return await self._running.flow.apply_expected_returns(command)

    def health(self) -> dict[str, object]:
        """Health for the status topic and the health endpoint."""
        running = self._running
        forwarder = running.forwarder if running is not None else None
        lag = running.flow.lag() if running is not None else None
        stall = running.buffer.stall.state() if running is not None else None
        shared = self._shared
        return views.health(shared.slots, shared.tallies, forwarder, shared.monotonic(), lag, stall)

    def view(self) -> views.DaemonView:
        """A snapshot for people: readers, buffer, forwarder, counters."""
        forwarder = self._running.forwarder if self._running is not None else None
        return views.view(self._shared.slots, self._shared.tallies, forwarder)

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        forwarder = self._running.forwarder if self._running is not None else None
        return views.status_line(self._shared.slots, self._shared.tallies.stats, forwarder)

    async def run(self) -> int:
        """Open the buffer, start every task, run until stopped; return the exit code.

        1 when the buffer failed for good (corrupt, disk full, a disk error that lasted): one
        `buffer_failed` event says why; what was committed stays committed.
        """
        buffer = await self._open_buffer()
        running: Running | None = None
        code = EXIT_OK
        try:
            running = await start_parts(
                self._shared, buffer, health=self.health, notifier=self._notifier
            )
            self._running = running
            stats = await buffer.stats()
            self._shared.tallies.stats = stats
            self._notifier.send("READY=1", f"STATUS={self.status_line()}")
            _log.info(
                "gateway_started",
                gateway=self.config.gateway.id,
                site=self.config.gateway.site,
                version=__version__,
                pending=stats.pending,
                cursor=running.flow.cursor,
            )
            code = await self._serve(running)
        finally:
            await self._shutdown(buffer, running)
        return code

    async def _open_buffer(self) -> Buffer:
        state_dir = self.config.gateway.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        buffer = await Buffer.open(
            buffer_path(state_dir),
            max_bytes=self.config.buffer.max_bytes,
            synchronous=self.config.buffer.synchronous,
            clock=self._shared.clock,
        )
        if buffer.corrupt_moved_to is not None:
            self._shared.tallies.counters["buffer_corrupt"] += 1
            _log.error(
                "buffer_was_corrupt_started_fresh",
                moved_to=str(buffer.corrupt_moved_to),
                advice="the damaged file is kept; send it to support, do not delete it",
            )
        return buffer

    async def _serve(self, running: Running) -> int:
        health = self.config.health
        async with contextlib.AsyncExitStack() as stack:
            if health.enabled:
                from gateway.daemon.console_view import (  # noqa: PLC0415 - loads aiohttp only when served
                    console_for,
                    console_hosts,
                    console_tls,
                )

                console = console_for(self.config, self._shared, running, self.health)
                await stack.enter_async_context(
                    HealthServer(
                        health.listen,
                        self.health,
                        policy=HealthPolicy(
                            broker_down_max_s=health.broker_down_max_s,
                            reader_down_max_s=health.reader_down_max_s,
                            buffer_full_share=health.buffer_full_share,
                        ),
                        actions={"profile-apply": running.switcher.apply_local},
                        extension=console,
                        hosts=console_hosts(self.config),
                        ssl_context=console_tls(self.config),
                    )
                )
            return await self._task_group(running)

    async def _task_group(self, running: Running) -> int:
        backoff = Backoff(min_s=0.5, max_s=30.0)
        flow, upkeep, shared = running.flow, running.upkeep, self._shared
        code = EXIT_OK
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._wait_for_stop(), name="stop")
                forwarder = group.create_task(running.forwarder.run(), name="forwarder")
                watchdog_s = self._notifier.watchdog_interval_s()
                if watchdog_s is not None:
                    group.create_task(self._watchdog(watchdog_s, forwarder), name="watchdog")
                group.create_task(flow.journal_loop(), name="journal")
                group.create_task(flow.pipeline_loop(), name="pipeline")
                group.create_task(upkeep.stats_loop(), name="stats")
                group.create_task(upkeep.retention_loop(), name="retention")
                group.create_task(upkeep.kpi_loop(), name="kpi")
                group.create_task(upkeep.verify_buffer(), name="buffer-verify")
                group.create_task(flow.expected.sweep_loop(shared.clock), name="expected-sweep")
                group.create_task(running.feedback.run(), name="feedback")
                for reader, slot in zip(self.config.readers, self.slots, strict=True):
                    factory = driver_factory(
                        reader,
                        profiles=shared.profiles,
                        replay_epochs=running.replay_epochs,
                        clock=shared.clock,
                        scans=running.scans,
                        outputs=running.feedback.latch(reader.id),
                        gpo_ports=gpo_ports(self.config, reader.id),
                    )
                    self._reader_tasks.append(
                        group.create_task(
                            supervise_reader(factory, slot, flow.ingest, backoff),
                            name=f"reader:{reader.id}",
                        )
                    )
        except* ShutdownRequested:
            _log.info("gateway_stopping")
        except* BufferUnavailable as failed:
            # A stall is waited out inside the buffer: what reaches here will not pass.
            _buffer_failed(_first(failed))
            code = EXIT_FAILED
        return code

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

    async def _shutdown(self, buffer: Buffer, running: Running | None) -> None:
        deadline = self._shared.monotonic() + SHUTDOWN_BUDGET_S
        if running is not None:
            # A stalled buffer would hold the drain for as long as the stall lasts: what is not
            # journaled by then was never acknowledged to its source either.
            with contextlib.suppress(GatewayError, TimeoutError):
                async with asyncio.timeout(DRAIN_BUDGET_S):
                    await running.flow.drain()
                    await running.kpis.save(buffer)
            remaining = max(0.5, deadline - self._shared.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.forwarder.stop(), timeout=remaining)
        with contextlib.suppress(GatewayError, TimeoutError):
            async with asyncio.timeout(max(0.5, deadline - self._shared.monotonic())):
                self._shared.tallies.stats = await buffer.stats()
        await buffer.close()
        self._notifier.close()
        _log.info("gateway_stopped")


def _first(group: BaseExceptionGroup[BufferUnavailable]) -> BufferUnavailable:
    """The first buffer error in a (nested) exception group."""
    found = group.exceptions[0]
    return found if isinstance(found, BufferUnavailable) else _first(found)


def _buffer_failed(exc: BufferUnavailable) -> None:
    """One line that says why the run ends and what to do; no traceback."""
    if exc.code == _SQLITE_FULL:
        advice = "free disk space, or lower [buffer] max_bytes below what is free; then restart"
    elif exc.code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        advice = "restart: the file is checked at start and a damaged one moved aside, kept"
    elif exc.code == _SQLITE_IOERR:
        advice = "check the disk (dmesg, SMART, mount): it kept failing; then restart"
    else:
        advice = "restart the gateway; if it happens again, keep the buffer file for support"
    _log.error("buffer_failed", path=exc.path, reason=exc.reason, code=exc.code, advice=advice)
