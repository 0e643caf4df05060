"""Tag reports (sllurp dicts or lean-decoded tuples) -> domain TagReads (pure; time passed in)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.domain.events import TagRead
from gateway.errors import FrameError
from gateway.readers.llrp.tag_reports import ReportedTag

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


@dataclass(frozen=True, slots=True)
class MappedReport:
    """The TagReads of one report, repeats of a tag on an antenna collapsed into one read."""

    reads: list[MappedRead]
    rejected: int  # tag reports without a usable EPC


def map_reported(
    tag: ReportedTag,
    *,
    reader: str,
    station: str,
    received_at_s: float,
    max_clock_skew_s: float = 300.0,
) -> MappedRead:
    """Map one lean-decoded tag report exactly as `map_tag` maps sllurp's dict of it."""
    epc_hex = tag.epc_hex
    if not epc_hex or epc_hex.strip("0123456789ABCDEF"):
        raise FrameError("llrp", "EPC is not hex")
    ts_us = tag.last_seen_us if tag.last_seen_us is not None else tag.first_seen_us
    at_s = received_at_s
    replaced = False
    if ts_us is not None:
        reader_s = ts_us / 1_000_000
        if reader_s < MIN_PLAUSIBLE_EPOCH_S or abs(reader_s - received_at_s) > max_clock_skew_s:
            replaced = True
        else:
            at_s = reader_s
    rssi = tag.peak_rssi_dbm
    count = tag.seen_count
    return MappedRead(
        TagRead(
            reader=reader,
            station=station,
            epc_hex=epc_hex,
            antenna=tag.antenna if tag.antenna is not None else 0,
            at_s=at_s,
            rssi_dbm=float(rssi) if rssi is not None else None,
            read_count=count if count is not None and count > 0 else 1,
            channel=tag.channel,
        ),
        replaced,
    )


def map_report(
    tags: list[ReportedTag],
    *,
    reader: str,
    station: str,
    received_at_s: float,
    max_clock_skew_s: float = 300.0,
) -> MappedReport:
    """Map a report's tags; reads of one EPC on one antenna become one read (counts summed).

    The collapsed read keeps the sum of the read counts, the peak RSSI, the last seen time and
    the channel of its last read; a report spans milliseconds, far less than any visit window.
    """
    merged: dict[tuple[str, int], MappedRead] = {}
    rejected = 0
    for tag in tags:
        try:
            mapped = map_reported(
                tag,
                reader=reader,
                station=station,
                received_at_s=received_at_s,
                max_clock_skew_s=max_clock_skew_s,
            )
        except FrameError:
            rejected += 1
            continue
        read = mapped.read
        key = (read.epc_hex, read.antenna)
        seen = merged.get(key)
        if seen is not None:
            mapped = MappedRead(
                _merge(seen.read, read), seen.clock_replaced or mapped.clock_replaced
            )
        merged[key] = mapped
    return MappedReport(list(merged.values()), rejected)


def _merge(earlier: TagRead, later: TagRead) -> TagRead:
    peaks = [r for r in (earlier.rssi_dbm, later.rssi_dbm) if r is not None]
    return TagRead(
        reader=later.reader,
        station=later.station,
        epc_hex=later.epc_hex,
        antenna=later.antenna,
        at_s=max(earlier.at_s, later.at_s),
        rssi_dbm=max(peaks) if peaks else None,
        read_count=earlier.read_count + later.read_count,
        channel=later.channel,
    )
