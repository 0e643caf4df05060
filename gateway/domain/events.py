"""Raw events: what readers and scanners saw, before the pipeline gives them meaning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar, dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def event_record(cls: type[_T]) -> type[_T]:
    """A frozen dataclass to the type checker, built without frozen's per-field cost.

    A frozen dataclass sets each field through object.__setattr__: building one is about 2.4x
    slower, and a busy portal builds a few of these per read at thousands of reads per second.
    The checker still refuses any assignment to a field; equal events hash alike, as frozen.
    """
    return dataclass(slots=True, unsafe_hash=True)(cls)


@event_record
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


@event_record
class BarcodeScan:
    """One barcode scan: `data` is the scanner's output (AIM symbology prefix kept, GS as \\x1d)."""

    reader: str
    station: str
    data: str
    at_s: float
    device: str | None = None
    kind: Literal["barcode"] = "barcode"


RawEvent = TagRead | BarcodeScan


@dataclass(frozen=True, slots=True)
class InputHeard:
    """A reader's input was found drained at `mono_s` (the daemon's monotonic clock): every read
    it sent before then is in hand. `mono_s` None: the session ended, it holds nothing back.

    Not journaled: it travels in order with the reads, so the pipeline closes visits only on time
    it has heard, and a starved or frozen daemon makes the same visits as a fast one.
    """

    reader: str
    mono_s: float | None
