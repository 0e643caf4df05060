"""Scan workflows per station: what an RMA, disposition or location scan does to what follows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.domain.barcodes import Barcode

# How long a disposition or location scanned at a station stays in force without a new one.
CONTEXT_TIMEOUT_S = 3600.0

# Items remembered for the rescan window before pruning the ones outside it.
RESCAN_ITEMS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class StationContext:
    """What is in force at a station when an item is seen: open RMA, disposition, location."""

    rma: str | None = None
    disposition: str | None = None
    location: str | None = None


class StationWorkflow:
    """The per-station state machine; pure, time passed in, JSON snapshot for restarts."""

    def __init__(self, station: str, rma_timeout_s: float, rescan_window_s: float) -> None:
        self.station = station
        self.rma_timeout_s = rma_timeout_s
        self.rescan_window_s = rescan_window_s
        self._rma: str | None = None
        self._rma_at_s = 0.0
        self._disposition: str | None = None
        self._disposition_at_s = 0.0
        self._location: str | None = None
        self._location_at_s = 0.0
        self._last_item_s: dict[str, float] = {}
        self._prune_above = RESCAN_ITEMS_KEPT

    def context(self, at_s: float) -> StationContext:
        """What is in force at `at_s` (expired RMAs and contexts close first)."""
        self._expire(at_s)
        return StationContext(rma=self._rma, disposition=self._disposition, location=self._location)

    def control(self, barcode: Barcode, at_s: float) -> str | None:
        """Apply a control scan (RMA, close, disposition, location); return what changed."""
        self._expire(at_s)
        if barcode.kind == "rma":
            previous, self._rma, self._rma_at_s = self._rma, barcode.value, at_s
            return "rma_opened" if previous is None else "rma_switched"
        if barcode.kind == "rma-close":
            closed, self._rma = self._rma, None
            return "rma_closed" if closed is not None else "rma_close_without_open"
        if barcode.kind == "disposition":
            self._disposition, self._disposition_at_s = barcode.value.lower(), at_s
            return "disposition_set"
        if barcode.kind == "location":
            self._location, self._location_at_s = _location_of(barcode), at_s
            return "location_set"
        return None

    def touch_rma(self, at_s: float) -> None:
        """An item arrived under the open RMA: its timeout counts from the latest activity."""
        if self._rma is not None:
            self._rma_at_s = max(self._rma_at_s, at_s)

    def is_rescan(self, item_key: str, at_s: float) -> bool:
        """True when the same item was scanned here within the rescan window (a double trigger)."""
        last = self._last_item_s.get(item_key)
        self._last_item_s[item_key] = at_s
        if len(self._last_item_s) > self._prune_above:
            horizon = at_s - self.rescan_window_s
            self._last_item_s = {k: v for k, v in self._last_item_s.items() if v >= horizon}
            # A burst of more items than that within one window (a replay, a backlog) would
            # otherwise prune on every scan: prune again only once the dict has doubled.
            self._prune_above = max(RESCAN_ITEMS_KEPT, 2 * len(self._last_item_s))
        return last is not None and 0 <= at_s - last <= self.rescan_window_s

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {
            "rma": [self._rma, self._rma_at_s],
            "disposition": [self._disposition, self._disposition_at_s],
            "location": [self._location, self._location_at_s],
            "last_item_s": self._last_item_s,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load state written by `snapshot()`."""
        self._rma, self._rma_at_s = data["rma"]
        self._disposition, self._disposition_at_s = data["disposition"]
        self._location, self._location_at_s = data["location"]
        self._last_item_s = {str(k): float(v) for k, v in data["last_item_s"].items()}

    def _expire(self, at_s: float) -> None:
        if self._rma is not None and at_s - self._rma_at_s > self.rma_timeout_s:
            self._rma = None
        if self._disposition is not None and at_s - self._disposition_at_s > CONTEXT_TIMEOUT_S:
            self._disposition = None
        if self._location is not None and at_s - self._location_at_s > CONTEXT_TIMEOUT_S:
            self._location = None


def _location_of(barcode: Barcode) -> str:
    if barcode.gln is not None:
        if barcode.gln_extension:
            return f"{barcode.gln}.{barcode.gln_extension}"
        return barcode.gln
    return barcode.value
