"""Tag reports (sllurp dicts or lean-decoded tuples) -> domain TagReads (pure; time passed in)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
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
    """The TagReads of one report, with many repeats of a tag on an antenna collapsed."""

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
    """Map a report's tags; many reads of one EPC on one antenna collapse into a few.

    Smoothing judges a zone by its third strongest read, so of each (EPC, antenna) the report's
    `KEEP_STRONGEST` strongest reads are kept as they are; the others' read counts go to the
    latest kept read, and the kept reads take the first and the last time seen between them.
    Counts, the strongest reads and first/last seen are all kept; what is lost is the exact
    time of reads within one report (milliseconds, far below any visit window).
    """
    groups: dict[tuple[str, int], list[tuple[int, MappedRead]]] = {}
    rejected = 0
    for index, tag in enumerate(tags):
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
        key = (mapped.read.epc_hex, mapped.read.antenna)
        group = groups.get(key)
        if group is None:
            groups[key] = [(index, mapped)]
        else:
            group.append((index, mapped))
    if len(groups) == len(tags) - rejected:
        return MappedReport([m for group in groups.values() for _, m in group], rejected)
    out: list[tuple[int, MappedRead]] = []
    for group in groups.values():
        out.extend(group if len(group) <= KEEP_STRONGEST else _collapse(group))
    out.sort(key=lambda pair: pair[0])  # arrival order across tags and antennas
    return MappedReport([m for _, m in out], rejected)


# The smoothing's robust peak is a zone's third strongest read: three keep it exact.
KEEP_STRONGEST = 3


def _collapse(group: list[tuple[int, MappedRead]]) -> list[tuple[int, MappedRead]]:
    """The strongest reads of one tag on one antenna, carrying the counts and times of all."""

    def strength(pair: tuple[int, MappedRead]) -> float:
        rssi = pair[1].read.rssi_dbm
        return -math.inf if rssi is None else rssi

    ranked = sorted(group, key=strength, reverse=True)  # stable: ties keep arrival order
    kept = sorted(ranked[:KEEP_STRONGEST], key=lambda pair: pair[0])
    dropped = ranked[KEEP_STRONGEST:]
    extra = sum(m.read.read_count for _, m in dropped)
    replaced = any(m.clock_replaced for _, m in dropped)
    first_s = min(m.read.at_s for _, m in group)
    last_s = max(m.read.at_s for _, m in group)
    (_, head), middle, (_, tail) = kept[0], kept[1:-1], kept[-1]
    return [
        (group[0][0], MappedRead(replace(head.read, at_s=first_s), head.clock_replaced)),
        *middle,
        (
            group[-1][0],
            MappedRead(
                replace(tail.read, at_s=last_s, read_count=tail.read.read_count + extra),
                tail.clock_replaced or replaced,
            ),
        ),
    ]
