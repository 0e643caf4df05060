"""Raw events: what readers and scanners saw, before the pipeline gives them meaning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class TagRead:
    """One RFID tag report: `epc_hex` is the EPC bank as read, uppercase hex (may be padded)."""

    reader: str
    station: str
    epc_hex: str
    antenna: int
    at_s: float
    rssi_dbm: float | None = None
    read_count: int = 1
    channel: int | None = None
    kind: Literal["tag"] = "tag"


@dataclass(frozen=True, slots=True)
class BarcodeScan:
    """One barcode scan: `data` is the scanner's output (AIM symbology prefix kept, GS as \\x1d)."""

    reader: str
    station: str
    data: str
    at_s: float
    device: str | None = None
    kind: Literal["barcode"] = "barcode"


RawEvent = TagRead | BarcodeScan
