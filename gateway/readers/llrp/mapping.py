"""sllurp tag report dicts -> domain TagReads (pure; time passed in)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.domain.events import TagRead
from gateway.errors import FrameError

# A reader clock before this (2010-01-01 UTC) was never set: boards boot in 1970 or 2000.
MIN_PLAUSIBLE_EPOCH_S = 1_262_304_000.0


@dataclass(frozen=True, slots=True)
class MappedRead:
    """A TagRead and whether its reader timestamp was replaced by the receive time."""

    read: TagRead
    clock_replaced: bool


def map_tag(
    tag: Mapping[str, Any],
    *,
    reader: str,
    station: str,
    received_at_s: float,
    max_clock_skew_s: float = 300.0,
) -> MappedRead:
    """Map one sllurp TagReportData dict; FrameError if it carries no EPC."""
    epc_hex = _epc_hex(tag)
    ts_us = tag.get("LastSeenTimestampUTC", tag.get("FirstSeenTimestampUTC"))
    at_s = received_at_s
    replaced = False
    if isinstance(ts_us, int):
        reader_s = ts_us / 1_000_000
        if reader_s < MIN_PLAUSIBLE_EPOCH_S or abs(reader_s - received_at_s) > max_clock_skew_s:
            replaced = True
        else:
            at_s = reader_s
    else:
        replaced = ts_us is not None
    rssi = tag.get("PeakRSSI")
    channel = tag.get("ChannelIndex")
    count = tag.get("TagSeenCount", 1)
    antenna = tag.get("AntennaID", 0)
    return MappedRead(
        TagRead(
            reader=reader,
            station=station,
            epc_hex=epc_hex,
            antenna=antenna if isinstance(antenna, int) else 0,
            at_s=at_s,
            rssi_dbm=float(rssi) if isinstance(rssi, int | float) else None,
            read_count=count if isinstance(count, int) and count > 0 else 1,
            channel=channel if isinstance(channel, int) else None,
        ),
        replaced,
    )


def _epc_hex(tag: Mapping[str, Any]) -> str:
    raw = tag.get("EPC", tag.get("EPC-96"))
    if isinstance(raw, bytes | bytearray):
        text = raw.decode("ascii", errors="replace")
    elif isinstance(raw, str):
        text = raw
    else:
        raise FrameError("llrp", "tag report without EPC")
    text = text.strip().upper()
    # strip() leaves something exactly when a character that is not hex is present.
    if not text or text.strip("0123456789ABCDEF"):
        raise FrameError("llrp", "EPC is not hex")
    return text
