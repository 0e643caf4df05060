"""Tag reads become visits: one observation per tag passage at a station, not hundreds of reads.

A visit of one tag at one station starts with its first read at or above the station's RSSI floor
and ends once ``absent_s`` passes without a read (``reversal_hold_s`` longer while it looks like an
inward passage, so an item carried straight back out joins the same visit and becomes ``in-out``).
It keeps aggregates, never the reads: counts, per-zone first/last seen and top RSSI, the antennas,
the readers, and a time profile of at most 32 bins per zone (see gateway.domain.direction), so a
tag read a million times costs the same memory as one read ten times. A tag that never leaves
never ends its visit: it makes nothing until it goes.

Time is the reads' own ``at_s``; a read older than its visit's last read (a reader clock reset,
two readers' clocks apart) counts at the visit's last time, so durations never go negative. A
read that comes more than ``absent_s`` after the last one ends the old visit before it starts the
new one, so visits do not depend on how often ``expire`` is called, and a tracker restored from
its ``snapshot`` goes on exactly as the uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from gateway.domain.direction import (
    DirectionEvidence,
    SmoothingSettings,
    TimeBin,
    VisitDirection,
    ZoneEvidence,
    classify_visit,
)
from gateway.domain.events import TagRead
from gateway.errors import ConfigError, InputError

__all__ = [
    "SNAPSHOT_VERSION",
    "SmoothingSettings",
    "TrackerStats",
    "Visit",
    "VisitTracker",
    "ZoneMap",
    "ZoneSeen",
    "evidence_of",
]

SNAPSHOT_VERSION = 1
UNZONED = ""


@dataclass(frozen=True, slots=True)
class ZoneMap:
    """One reader's antennas by zone name; antennas in no zone belong to zone "" (unzoned)."""

    antenna_zones: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_config(cls, zones: Mapping[str, Sequence[int]]) -> ZoneMap:
        """Build from `{"outside": [1, 2], "inside": [3, 4]}`; ConfigError on a clash."""
        antenna_zones: dict[int, str] = {}
        for name, antennas in zones.items():
            if not name:
                raise ConfigError("zones", "a zone needs a name")
            for antenna in antennas:
                if isinstance(antenna, bool) or not isinstance(antenna, int) or antenna < 1:
                    raise ConfigError(f"zones.{name}", f"antenna {antenna!r} is not a port >= 1")
                if antenna in antenna_zones and antenna_zones[antenna] != name:
                    raise ConfigError(
                        f"zones.{name}", f"antenna {antenna} is also in {antenna_zones[antenna]}"
                    )
                antenna_zones[antenna] = name
        return cls(MappingProxyType(dict(sorted(antenna_zones.items()))))

    def zone_of(self, antenna: int) -> str:
        """The zone an antenna belongs to, "" when none."""
        return self.antenna_zones.get(antenna, UNZONED)

    @property
    def names(self) -> frozenset[str]:
        """The zone names this reader has."""
        return frozenset(self.antenna_zones.values())


@dataclass(frozen=True, slots=True)
class ZoneSeen:
    """What one zone saw of a visit."""

    zone: str
    reads: int
    first_seen_s: float
    last_seen_s: float
    peak_rssi_dbm: float | None


@dataclass(frozen=True, slots=True)
class Visit:
    """One tag's passage at one station, classified; `reader` is the one with most reads.

    `zones` are the named zones in the order they first saw the tag (unzoned antennas count in
    `reads` and `antennas` but are not a zone); `zone_detail` has per-zone counts and times.
    """

    station: str
    epc_hex: str
    reader: str
    first_seen_s: float
    last_seen_s: float
    reads: int
    peak_rssi_dbm: float | None
    antennas: tuple[int, ...]
    zones: tuple[str, ...]
    direction: VisitDirection
    confidence: float
    stray: bool
    reason: str
    zone_detail: tuple[ZoneSeen, ...] = ()

    @property
    def dwell_s(self) -> float:
        """Seconds from first to last read (never negative)."""
        return self.last_seen_s - self.first_seen_s


class TrackerStats:
    """Counters of one tracker (plain attributes, bumped on the per-read path)."""

    __slots__ = (
        "ignored_below_floor",
        "reads_observed",
        "reads_out_of_order",
        "strays",
        "visits_ended",
        "visits_started",
    )

    def __init__(self) -> None:
        self.reads_observed = 0
        self.ignored_below_floor = 0
        self.reads_out_of_order = 0
        self.visits_started = 0
        self.visits_ended = 0
        self.strays = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {name: getattr(self, name) for name in self.__slots__}


class VisitTracker:
    """Turns one station's tag reads into classified visits; pure, time comes with the reads."""

    def __init__(
        self, station: str, settings: SmoothingSettings, zones: Mapping[str, ZoneMap]
    ) -> None:
        self.station = station
        self.settings = settings
        self.stats = TrackerStats()
        self._floor_dbm = settings.rssi_floor_dbm
        self._absent_s = settings.absent_s
        self._names: list[str] = [settings.outside_zone, settings.inside_zone, UNZONED]
        for zone_map in zones.values():
            for name in sorted(zone_map.names):
                if name not in self._names:
                    self._names.append(name)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._readers: dict[str, tuple[dict[int, int], bool]] = {}
        for reader, zone_map in zones.items():
            table = {a: self._index[z] for a, z in zone_map.antenna_zones.items()}
            directional = {settings.outside_zone, settings.inside_zone} <= zone_map.names
            self._readers[reader] = (table, directional)
        self._open: dict[str, _VisitState] = {}
        self._ended: list[Visit] = []
        self._check_at_s = float("-inf")

    def observe(self, read: TagRead) -> None:  # noqa: C901, PLR0912, PLR0915 - hot path inlined on purpose
        """Take one read: below the floor it is counted and ignored, else it joins its visit."""
        stats = self.stats
        stats.reads_observed += 1
        rssi = read.rssi_dbm
        if rssi is not None and rssi < self._floor_dbm:
            stats.ignored_below_floor += 1
            return
        at_s = read.at_s
        state = self._open.get(read.epc_hex)
        if state is None or (
            at_s > state.first_s + state.span_s + self._absent_s and self._gap_ends(state, at_s)
        ):
            if state is not None:
                self._ended.append(self._finish(state))
            state = self._start(read.epc_hex, at_s)
        n = read.read_count if read.read_count > 0 else 1
        t = at_s - state.first_s
        if t < state.span_s:
            stats.reads_out_of_order += 1
            t = state.span_s
        else:
            state.span_s = t
        reader = read.reader
        table = self._readers.get(reader)
        if table is None:
            table = self._unknown_reader(reader)
        zi = table[0].get(read.antenna, 2)
        if table[1]:
            state.directional = True
        state.reads += n
        state.antennas.add(read.antenna)
        counts = state.readers
        counts[reader] = counts.get(reader, 0) + n
        acc = state.zones[zi]
        if acc is None:
            acc = state.zones[zi] = _ZoneAcc(t)
            state.order.append(zi)
        acc.reads += n
        acc.last_s = t
        if rssi is None:
            weight = float(n)
        else:
            weight = n * (1.0 + (rssi - self._floor_dbm) * 0.1)
            if rssi > acc.p3:
                acc.push(rssi)
        if zi < 2:
            idx = int(t * state.inv_width)
            if idx >= _MAX_BINS:
                state.compact(t)
                idx = int(t * state.inv_width)
            j = idx * 4 + zi * 2
            bins = state.bins
            bins[j] += weight
            bins[j + 1] += n

    def expire(self, now_s: float) -> list[Visit]:
        """Visits that ended by `now_s` (or by a later read), oldest first; they are forgotten."""
        ended, self._ended = self._ended, []
        if now_s >= self._check_at_s and self._open:
            next_check = float("inf")
            for epc, state in list(self._open.items()):
                deadline = self._deadline(state, now_s)
                if now_s > deadline:
                    del self._open[epc]
                    ended.append(self._finish(state))
                else:
                    next_check = min(next_check, deadline)
            self._check_at_s = next_check
        ended.sort(key=lambda v: (v.first_seen_s, v.epc_hex))
        return ended

    def open_visits(self) -> int:
        """Visits still open (their tags read within `absent_s`, or held)."""
        return len(self._open)

    def pending_epcs(self) -> list[str]:
        """EPC hex of every visit that `expire` has yet to hand out (open or already ended)."""
        return [*self._open, *(visit.epc_hex for visit in self._ended)]

    def snapshot(self) -> dict[str, object]:
        """JSON-safe state: open visits as aggregates, visits ended but not yet expired, stats."""
        return {
            "v": SNAPSHOT_VERSION,
            "open": [self._dump(state) for state in self._open.values()],
            "ended": [_dump_visit(v) for v in self._ended],
            "stats": self.stats.as_dict(),
        }

    @classmethod
    def restore(
        cls,
        station: str,
        settings: SmoothingSettings,
        zones: Mapping[str, ZoneMap],
        snapshot: Mapping[str, object],
    ) -> VisitTracker:
        """A tracker that goes on from `snapshot`; InputError if it is not one of ours."""
        tracker = cls(station, settings, zones)
        if snapshot.get("v") != SNAPSHOT_VERSION:
            raise InputError("visit snapshot", f"unknown version {snapshot.get('v')!r}")
        try:
            for data in _items(snapshot.get("open", [])):
                state = tracker._load(data)
                tracker._open[state.epc] = state
            tracker._ended = [_load_visit(d) for d in _items(snapshot.get("ended", []))]
            stats = snapshot.get("stats", {})
            if isinstance(stats, Mapping):
                for name in TrackerStats.__slots__:
                    setattr(tracker.stats, name, int(stats.get(name, 0)))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError("visit snapshot", f"malformed: {exc!r}") from exc
        return tracker

    # -- private -------------------------------------------------------------------------------

    def _start(self, epc: str, at_s: float) -> _VisitState:
        state = _VisitState(epc, at_s, len(self._names), 1.0 / self.settings.bin_s)
        self._open[epc] = state
        self.stats.visits_started += 1
        self._check_at_s = min(self._check_at_s, at_s + self._absent_s)
        return state

    def _unknown_reader(self, reader: str) -> tuple[dict[int, int], bool]:
        entry: tuple[dict[int, int], bool] = ({}, False)
        self._readers[reader] = entry
        return entry

    def _gap_ends(self, state: _VisitState, at_s: float) -> bool:
        """A read `absent_s` after the last one ends the visit unless it is held as inward."""
        hold_s = self.settings.reversal_hold_s
        if hold_s <= 0:
            return True
        return at_s > self._deadline(state, at_s)

    def _deadline(self, state: _VisitState, now_s: float) -> float:
        deadline = state.first_s + state.span_s + self._absent_s
        hold_s = self.settings.reversal_hold_s
        if hold_s > 0 and now_s > deadline:
            verdict = classify_visit(self._evidence(state), self.settings)
            if verdict.direction == "in" and not verdict.stray:
                deadline += hold_s
        return deadline

    def _finish(self, state: _VisitState) -> Visit:
        verdict = classify_visit(self._evidence(state), self.settings)
        stats = self.stats
        stats.visits_ended += 1
        if verdict.stray:
            stats.strays += 1
        first_s = state.first_s
        seen = [(self._names[zi], state.zones[zi]) for zi in state.order]
        detail = tuple(
            ZoneSeen(
                zone=name,
                reads=acc.reads,
                first_seen_s=first_s + acc.first_s,
                last_seen_s=first_s + acc.last_s,
                peak_rssi_dbm=None if acc.p1 == _NO_PEAK else acc.p1,
            )
            for name, acc in seen
            if acc is not None
        )
        peaks = [z.peak_rssi_dbm for z in detail if z.peak_rssi_dbm is not None]
        reader = max(state.readers.items(), key=lambda item: item[1])[0]
        return Visit(
            station=self.station,
            epc_hex=state.epc,
            reader=reader,
            first_seen_s=first_s,
            last_seen_s=first_s + state.span_s,
            reads=state.reads,
            peak_rssi_dbm=max(peaks) if peaks else None,
            antennas=tuple(sorted(state.antennas)),
            zones=tuple(z.zone for z in detail if z.zone != UNZONED),
            direction=verdict.direction,
            confidence=verdict.confidence,
            stray=verdict.stray,
            reason=verdict.reason,
            zone_detail=detail,
        )

    def _evidence(self, state: _VisitState) -> DirectionEvidence:
        robust = [acc.robust() for acc in state.zones if acc is not None]
        known = [p for p in robust if p is not None]
        return DirectionEvidence(
            reads=state.reads,
            dwell_s=state.span_s,
            directional=state.directional,
            robust_peak_rssi_dbm=max(known) if known else None,
            outside=_zone_evidence(state.zones[0]),
            inside=_zone_evidence(state.zones[1]),
            bins=state.time_bins(),
        )

    def _dump(self, state: _VisitState) -> dict[str, Any]:
        used = _MAX_BINS * 4
        while used > 0 and state.bins[used - 4 : used] == _EMPTY_BIN:
            used -= 4
        return {
            "epc": state.epc,
            "first_s": state.first_s,
            "span_s": state.span_s,
            "reads": state.reads,
            "directional": state.directional,
            "inv_width": state.inv_width,
            "antennas": sorted(state.antennas),
            "readers": [[r, n] for r, n in state.readers.items()],
            "zones": [
                [self._names[zi], acc.reads, acc.first_s, acc.last_s, acc.p1, acc.p2, acc.p3]
                for zi in state.order
                if (acc := state.zones[zi]) is not None
            ],
            "bins": state.bins[:used],
        }

    def _load(self, data: Mapping[str, Any]) -> _VisitState:
        state = _VisitState(
            str(data["epc"]), float(data["first_s"]), len(self._names), float(data["inv_width"])
        )
        state.span_s = float(data["span_s"])
        state.reads = int(data["reads"])
        state.directional = bool(data["directional"])
        state.antennas = {int(a) for a in data["antennas"]}
        state.readers = {str(r): int(n) for r, n in data["readers"]}
        for name, reads, first_s, last_s, p1, p2, p3 in data["zones"]:
            zi = self._index.get(name)
            if zi is None:  # a zone that left the config since: keep its evidence under it
                zi = len(self._names)
                self._names.append(name)
                self._index[name] = zi
            if zi >= len(state.zones):
                state.zones.extend([None] * (len(self._names) - len(state.zones)))
            acc = _ZoneAcc(float(first_s))
            acc.reads, acc.last_s = int(reads), float(last_s)
            acc.p1, acc.p2, acc.p3 = float(p1), float(p2), float(p3)
            state.zones[zi] = acc
            state.order.append(zi)
        bins = [float(x) for x in data["bins"]]
        if len(bins) > _MAX_BINS * 4 or len(bins) % 4:
            raise ValueError("bins")
        state.bins[: len(bins)] = bins
        return state


def evidence_of(
    reads: Iterable[TagRead],
    settings: SmoothingSettings | None = None,
    zones: Mapping[str, ZoneMap] | None = None,
) -> DirectionEvidence:
    """The direction evidence one visit's reads add up to (all reads taken as one visit)."""
    endless = replace(settings or SmoothingSettings(), absent_s=math.inf, reversal_hold_s=0.0)
    tracker = VisitTracker("", endless, zones or {})
    for read in reads:
        tracker.observe(read)
    states = list(tracker._open.values())  # noqa: SLF001 - our own class
    if len(states) != 1:
        raise InputError("reads", f"expected the reads of one tag, got {len(states)} tags")
    return tracker._evidence(states[0])  # noqa: SLF001 - our own class


# -- private state ---------------------------------------------------------------------------

_MAX_BINS = 32
_NO_PEAK = -1000.0
_EMPTY_BIN = [0.0, 0.0, 0.0, 0.0]


class _ZoneAcc:
    """One zone's aggregates in a visit; times are offsets from the visit's first read."""

    __slots__ = ("first_s", "last_s", "p1", "p2", "p3", "reads")

    def __init__(self, first_s: float) -> None:
        self.reads = 0
        self.first_s = first_s
        self.last_s = first_s
        self.p1 = self.p2 = self.p3 = _NO_PEAK

    def push(self, rssi: float) -> None:
        """Keep the three strongest reads (called only when `rssi` beats the third)."""
        if rssi > self.p1:
            self.p1, self.p2, self.p3 = rssi, self.p1, self.p2
        elif rssi > self.p2:
            self.p2, self.p3 = rssi, self.p2
        else:
            self.p3 = rssi

    def robust(self) -> float | None:
        """The third strongest read, or the weakest of fewer: one lucky reflection is not enough."""
        for peak in (self.p3, self.p2, self.p1):
            if peak != _NO_PEAK:
                return peak
        return None


class _VisitState:
    """An open visit's aggregates; bins hold (weight, reads) for outside then inside."""

    __slots__ = (
        "antennas",
        "bins",
        "directional",
        "epc",
        "first_s",
        "inv_width",
        "order",
        "readers",
        "reads",
        "span_s",
        "zones",
    )

    def __init__(self, epc: str, first_s: float, zone_count: int, inv_width: float) -> None:
        self.epc = epc
        self.first_s = first_s
        self.span_s = 0.0
        self.reads = 0
        self.directional = False
        self.inv_width = inv_width
        self.antennas: set[int] = set()
        self.readers: dict[str, int] = {}
        self.zones: list[_ZoneAcc | None] = [None] * zone_count
        self.order: list[int] = []
        self.bins: list[float] = _EMPTY_BIN * _MAX_BINS

    def compact(self, t: float) -> None:
        """Halve the resolution (merge bin pairs) until offset `t` fits in the profile."""
        bins = self.bins
        while int(t * self.inv_width) >= _MAX_BINS:
            for k in range(_MAX_BINS // 2):
                a, b, dst = 8 * k, 8 * k + 4, 4 * k
                for off in range(4):
                    bins[dst + off] = bins[a + off] + bins[b + off]
            bins[_MAX_BINS * 2 :] = _EMPTY_BIN * (_MAX_BINS // 2)
            self.inv_width *= 0.5

    def time_bins(self) -> tuple[TimeBin, ...]:
        """The profile as frozen bins, up to the last one with any read."""
        bins = self.bins
        # The last read's offset names the last bin used: most visits fill a few of 32 slots.
        end = min(_MAX_BINS, int(self.span_s * self.inv_width) + 1) * 4
        while end and bins[end - 3] == 0 and bins[end - 1] == 0:
            end -= 4
        return tuple(
            TimeBin(
                outside_weight=bins[j],
                outside_reads=int(bins[j + 1]),
                inside_weight=bins[j + 2],
                inside_reads=int(bins[j + 3]),
            )
            for j in range(0, end, 4)
        )


def _zone_evidence(acc: _ZoneAcc | None) -> ZoneEvidence:
    if acc is None:
        return ZoneEvidence()
    return ZoneEvidence(reads=acc.reads, robust_peak_rssi_dbm=acc.robust())


def _items(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise InputError("visit snapshot", "expected a list of objects")
    return value


def _dump_visit(visit: Visit) -> dict[str, Any]:
    return {
        "station": visit.station,
        "epc_hex": visit.epc_hex,
        "reader": visit.reader,
        "first_seen_s": visit.first_seen_s,
        "last_seen_s": visit.last_seen_s,
        "reads": visit.reads,
        "peak_rssi_dbm": visit.peak_rssi_dbm,
        "antennas": list(visit.antennas),
        "zones": list(visit.zones),
        "direction": visit.direction,
        "confidence": visit.confidence,
        "stray": visit.stray,
        "reason": visit.reason,
        "zone_detail": [
            [z.zone, z.reads, z.first_seen_s, z.last_seen_s, z.peak_rssi_dbm]
            for z in visit.zone_detail
        ],
    }


def _load_visit(data: Mapping[str, Any]) -> Visit:
    direction = data["direction"]
    if direction not in ("in", "out", "in-out", "out-in", "none"):
        raise ValueError("direction")
    peak = data["peak_rssi_dbm"]
    return Visit(
        station=str(data["station"]),
        epc_hex=str(data["epc_hex"]),
        reader=str(data["reader"]),
        first_seen_s=float(data["first_seen_s"]),
        last_seen_s=float(data["last_seen_s"]),
        reads=int(data["reads"]),
        peak_rssi_dbm=None if peak is None else float(peak),
        antennas=tuple(int(a) for a in data["antennas"]),
        zones=tuple(str(z) for z in data["zones"]),
        direction=direction,
        confidence=float(data["confidence"]),
        stray=bool(data["stray"]),
        reason=str(data["reason"]),
        zone_detail=tuple(
            ZoneSeen(str(z), int(n), float(f), float(la), None if p is None else float(p))
            for z, n, f, la, p in data["zone_detail"]
        ),
    )
