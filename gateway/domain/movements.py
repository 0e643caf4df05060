"""Movements: the business facts the WMS receives (receipt, inspection, restock, disposal)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

MovementType = Literal["receipt", "inspection", "restock", "disposal", "rma-complete", "gap"]
StationKind = Literal["receiving", "inspection", "restock", "disposal"]
Direction = Literal["in", "out", "none"]

# Fixed namespace so that every gateway derives the same UUIDv5 for the same facts.
MOVEMENT_NAMESPACE = uuid.UUID("5b0d3f52-6a53-4bb8-9f0e-2d1c6f0a9e11")


@dataclass(frozen=True, slots=True)
class Item:
    """What moved: at least one identifier is set; `key` is its stable identity."""

    epc: str | None = None
    gtin: str | None = None
    serial: str | None = None
    sscc: str | None = None
    grai: str | None = None
    code: str | None = None

    @property
    def key(self) -> str:
        """A stable string naming the item, preferring the EPC URI."""
        if self.epc:
            return self.epc
        if self.gtin:
            return f"gtin:{self.gtin}:{self.serial or ''}"
        if self.sscc:
            return f"sscc:{self.sscc}"
        if self.grai:
            return f"grai:{self.grai}"
        return f"code:{self.code or ''}"


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why the gateway believes the movement happened."""

    source: Literal["rfid", "barcode", "system"]
    reader: str
    first_seen_s: float
    last_seen_s: float
    reads: int = 1
    antennas: tuple[int, ...] = ()
    zones: tuple[str, ...] = ()
    peak_rssi_dbm: float | None = None
    direction_confidence: float | None = None
    data: str | None = None


@dataclass(frozen=True, slots=True)
class Movement:
    """One movement; `id` is deterministic: re-derived after a crash, it has the same id."""

    id: str
    type: MovementType
    occurred_at_s: float
    station: str
    item: Item
    evidence: Evidence
    direction: Direction = "none"
    rma: str | None = None
    expected: bool | None = None
    disposition: str | None = None
    location: str | None = None
    flags: tuple[str, ...] = field(default=())
    detail: tuple[tuple[str, str], ...] = field(default=())


def movement_id(
    gateway: str, item_key: str, station: str, movement_type: str, visit_start_s: float
) -> str:
    """UUIDv5 over gateway, item, station, type and visit start (milliseconds)."""
    name = f"{gateway}|{item_key}|{station}|{movement_type}|{round(visit_start_s * 1000)}"
    return str(uuid.uuid5(MOVEMENT_NAMESPACE, name))
