"""The daemon's link between the pipeline's slice of expected returns and the buffer's registry.

Before a pipeline step it loads the RMAs the step's events can touch, after the step it hands
over what receipts changed (written with the step's movements), and it runs announcements and
the expiry sweep in chunks under the pipeline lock, dropping the slice after each chunk.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from gateway.buffer.expected import ExpectedStats, ExpectedStore, write_updates
from gateway.daemon.shared import LOG_COMPONENT
from gateway.domain.events import RawEvent
from gateway.domain.expected import ExpectedReturns, lookup_keys
from gateway.domain.movements import Item
from gateway.domain.pipeline import Pipeline
from gateway.logs import get_logger

_log = get_logger(LOG_COMPONENT)

# Above this many RMAs in memory the slice is dropped between steps (it is all on disk by then).
SLICE_MAX_RMAS = 20_000
SWEEP_EVERY_S = 60.0


class ExpectedLink:
    """Keeps `pipeline.expected` a consistent slice of the registry in the buffer."""

    def __init__(self, store: ExpectedStore) -> None:
        self.store = store
        self._lock = asyncio.Lock()
        self._version: int | None = None
        self._pipeline: Pipeline | None = None
        self.open_rmas = 0

    @staticmethod
    def new_slice() -> ExpectedReturns:
        """The registry object a daemon's pipeline is built with."""
        return ExpectedReturns(track_updates=True)

    def attach(self, pipeline: Pipeline, lock: asyncio.Lock) -> None:
        """Serve this pipeline; `lock` is the one its steps hold (announcements take it too)."""
        self._pipeline = pipeline
        self._lock = lock
        self._version = None

    async def import_legacy(self) -> int:
        """Move a registry found in an older pipeline snapshot into the buffer; how many RMAs."""
        pipeline = self._pipeline
        if pipeline is None or not pipeline.legacy_expected:
            return 0
        legacy = ExpectedReturns.restore(pipeline.legacy_expected)
        count = await self.store.import_rmas(legacy.rmas())
        pipeline.legacy_expected = []
        _log.info("expected_returns_moved_to_buffer", rmas=count)
        return count

    async def prefetch(self, events: Sequence[RawEvent]) -> None:
        """Load what `events` and the open visits may match (the caller holds the lock)."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        registry = pipeline.expected
        if len(registry) > SLICE_MAX_RMAS:
            self.forget()
        keys = pipeline.lookup_keys(events)
        missing = registry.missing(keys)
        if not missing and not events:
            return
        # Receipts of this step not yet written must not be dropped with the slice.
        reload = not registry.has_updates()
        fetched = await self.store.fetch(keys, missing, self._version, reload=reload)
        if fetched.all_keys:
            registry.forget()
        registry.load(fetched.rmas, fetched.keys)
        self._version = fetched.version
        if fetched.all_keys:
            # The registry changed: the open visits' keys, not asked for this step, go too.
            pending = registry.missing(pipeline.pending_lookup_keys())
            if pending:
                fetched = await self.store.fetch(pending, pending, self._version, reload=False)
                registry.load(fetched.rmas, fetched.keys)

    def updates_writer(self) -> Callable[[sqlite3.Connection], None] | None:
        """What receipts changed since the last call, as a writer for the checkpoint."""
        if self._pipeline is None:
            return None
        updates = self._pipeline.expected.take_updates()
        if not updates:
            return None
        return functools.partial(write_updates, updates=updates)

    def forget(self) -> None:
        """Drop the slice: the registry changed under it."""
        if self._pipeline is not None:
            self._pipeline.expected.forget()
        self._version = None

    async def announce(self, command: dict[str, Any]) -> dict[str, Any]:
        """Apply an `expected-returns` command in chunks, scans going on between them."""
        result = await self.store.announce(
            command, guard=lambda: self._lock, after_chunk=self.forget
        )
        self.open_rmas = int(result.get("open", self.open_rmas))
        return result

    async def lookup_registry(self, item: Item | None, rma: str) -> ExpectedReturns:
        """A registry holding what a lookup needs: the RMAs `item` can match, or RMA `rma`."""
        registry = ExpectedReturns()
        if item is None:
            registry.load(await self.store.fetch_rmas([rma.strip()]), [])
        else:
            keys = set(lookup_keys(item))
            fetched = await self.store.fetch(keys, keys, None)
            registry.load(fetched.rmas, fetched.keys)
        return registry

    async def stats(self) -> ExpectedStats:
        """The registry's counters."""
        stats = await self.store.stats()
        self.open_rmas = stats.open_rmas
        return stats

    async def sweep_loop(self, clock: Callable[[], float]) -> None:
        """Close expired RMAs every SWEEP_EVERY_S, in bounded transactions."""
        while True:
            swept = await self.store.sweep_expired(
                clock(), guard=lambda: self._lock, after_chunk=self.forget
            )
            if swept:
                _log.info("expected_returns_expired", rmas=swept)
            await asyncio.sleep(SWEEP_EVERY_S)
