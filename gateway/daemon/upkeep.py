"""The daemon's periodic chores: buffer statistics, KPI publishing, retention, the full check."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass

from gateway.buffer.store import Buffer
from gateway.daemon.flow import PipelineFlow
from gateway.daemon.kpis import KpiTracker
from gateway.daemon.shared import LOG_COMPONENT, Shared
from gateway.daemon.views import status_line
from gateway.logs import get_logger
from gateway.runtime.notify import SystemdNotifier
from gateway.sync.forwarder import Forwarder

_log = get_logger(LOG_COMPONENT)

STATS_EVERY_S = 1.0
RETENTION_EVERY_S = 600.0
# Reader states that count as down for the health policy's reader_down_max_s.
_DOWN_STATES = ("down", "silent", "rejected-config")


@dataclass(frozen=True, slots=True)
class Upkeep:
    """Loops that run beside the data path for as long as the daemon runs."""

    shared: Shared
    buffer: Buffer
    forwarder: Forwarder
    flow: PipelineFlow
    kpis: KpiTracker
    notifier: SystemdNotifier

    async def stats_loop(self) -> None:
        """Once a second: buffer statistics, systemd's status, since-when things are down."""
        tallies, slots = self.shared.tallies, self.shared.slots
        watch_s = self.shared.config.profiles.rollback_watch_s
        while True:
            await asyncio.sleep(STATS_EVERY_S)
            tallies.stats = await self.buffer.stats()
            self.notifier.send(f"STATUS={status_line(slots, tallies.stats, self.forwarder)}")
            now = self.shared.monotonic()
            if self.forwarder.stats.connected:
                tallies.broker_down_since = None
            elif tallies.broker_down_since is None:
                tallies.broker_down_since = now
            for slot in slots:
                if slot.health().state in _DOWN_STATES:
                    tallies.reader_down_since.setdefault(slot.reader, now)
                else:
                    tallies.reader_down_since.pop(slot.reader, None)
                samples = tallies.read_counts.setdefault(slot.reader, deque())
                samples.append((now, slot.health().events))
                while samples and now - samples[0][0] > watch_s:
                    samples.popleft()

    async def verify_buffer(self) -> None:
        """The full integrity check of a large buffer, off the start-up path."""
        reason = await self.buffer.verify()
        if reason is not None:
            self.shared.tallies.counters["buffer_corrupt"] += 1
            _log.error("buffer_corrupt_restart_to_move_aside", reason=reason)

    async def kpi_loop(self) -> None:
        """Publish the KPIs (retained) every `mqtt.kpi_interval_s`."""
        while True:
            await asyncio.sleep(self.shared.config.mqtt.kpi_interval_s)
            await self.publish_kpis()

    async def publish_kpis(self) -> None:
        """Publish the KPIs now, and keep their state in the buffer."""
        config, tallies = self.shared.config, self.shared.tallies
        stats = tallies.stats
        open_rmas = (await self.flow.expected.stats()).open_rmas  # O(1): kept counters
        tallies.kpi_snapshot = self.kpis.state.snapshot_kpis(
            self.shared.clock(),
            open_rmas=open_rmas,
            oldest_unacked_age_s=stats.oldest_pending_age_s if stats is not None else None,
        )
        payload = json.dumps(
            {"gateway": config.gateway.id, "site": config.gateway.site, **tallies.kpi_snapshot},
            default=str,
        ).encode()
        await self.forwarder.publish_retained(self.shared.topics.kpi, payload)
        await self.kpis.save(self.buffer)

    async def retention_loop(self) -> None:
        """Prune delivered movements older than the retention, every ten minutes."""
        retention_s = self.shared.config.buffer.delivered_retention_s
        while True:
            pruned = await self.buffer.prune_delivered(self.shared.clock() - retention_s)
            if pruned:
                _log.info("delivered_movements_pruned", rows=pruned)
            await asyncio.sleep(RETENTION_EVERY_S)
