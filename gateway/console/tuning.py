"""Portal tuning: read rate and RSSI per antenna over the last 30 minutes, tags split into crossing
and parked, and suggestions drawn from what the gateway sees, each with its evidence.

`AntennaHistory` is a ring of 10-second buckets per (reader, antenna), fixed in size, so memory
does not grow with time or read rate; `TagsInView` fills it from its per-antenna counters at each
tick of the console's feed (twice a second), not once per read.
Everything else is pure and runs when a tuning page asks, with time passed in. A suggestion only
proposes a profile; applying it is the console's ordinary apply (checks, rollback, history), on a
technician's click.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError
from gateway.profiles import Profile, parse_profile

if TYPE_CHECKING:
    from gateway.console.tags import TagSeen  # tags.py feeds AntennaHistory: no import cycle

BUCKET_S = 10.0
HISTORY_BUCKETS = 180  # 30 minutes of 10-second buckets
HISTORY_ANTENNAS_MAX = 256  # (reader, port) pairs kept; more are not counted
DEFAULT_PARKED_AFTER_S = 120.0
PARKED_TAGS_MIN = 3  # parked tags on one antenna before it is worth a suggestion
POWER_STEP_DOWN_DB = 3.0
FLOOR_MARGIN_DB = 3.0
SILENT_WINDOW_S = 600.0
SILENT_OTHERS_MIN_READS = 100
CROSSING_DIRECTIONS = frozenset({"in", "out"})


class AntennaSeries:
    """One antenna's ring of buckets: reads, RSSI sum and count per BUCKET_S."""

    __slots__ = ("bucket", "reads", "rssi_n", "rssi_sum")

    def __init__(self) -> None:
        self.bucket = [-1] * HISTORY_BUCKETS
        self.reads = [0] * HISTORY_BUCKETS
        self.rssi_sum = [0.0] * HISTORY_BUCKETS
        self.rssi_n = [0] * HISTORY_BUCKETS

    def add(self, bucket: int, count: int, rssi_sum: float, rssi_n: int) -> None:
        """Count reads and RSSI reports into `bucket`; older than the ring holds: ignored."""
        slot = bucket % HISTORY_BUCKETS
        held = self.bucket[slot]
        if held != bucket:
            if held > bucket:
                return  # a late read from more than the ring's span ago
            self.bucket[slot] = bucket
            self.reads[slot] = 0
            self.rssi_sum[slot] = 0.0
            self.rssi_n[slot] = 0
        self.reads[slot] += count
        self.rssi_sum[slot] += rssi_sum
        self.rssi_n[slot] += rssi_n

    def points(self, first: int, last: int) -> list[tuple[int, int, float | None]]:
        """(bucket, reads, mean RSSI) of every bucket from `first` to `last` that holds reads."""
        found = []
        for bucket in range(max(first, last - HISTORY_BUCKETS + 1), last + 1):
            slot = bucket % HISTORY_BUCKETS
            if self.bucket[slot] == bucket and self.reads[slot]:
                n = self.rssi_n[slot]
                found.append((bucket, self.reads[slot], self.rssi_sum[slot] / n if n else None))
        return found


class AntennaHistory:
    """Per (reader, antenna) ring buffers of reads and RSSI; bounded in antennas and in time."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, int], AntennaSeries] = {}

    def add(
        self, key: tuple[str, int], at_s: float, count: int, rssi_sum: float = 0.0, rssi_n: int = 0
    ) -> None:
        """Count reads and the sum of `rssi_n` RSSI reports at `at_s` (a few times a second)."""
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= HISTORY_ANTENNAS_MAX:
                return
            series = self._series[key] = AntennaSeries()
        series.add(int(at_s // BUCKET_S), count, rssi_sum, rssi_n)

    def antennas(self, reader: str) -> list[int]:
        """The antenna ports of this reader that have been read."""
        return sorted(port for rid, port in self._series if rid == reader)

    def series(
        self, reader: str, now_s: float, window_s: float = HISTORY_BUCKETS * BUCKET_S
    ) -> dict[int, dict[str, list[Any]]]:
        """Per port: bucket start times, reads per second and mean RSSI over the window."""
        last = int(now_s // BUCKET_S)
        first = last - max(1, math.ceil(window_s / BUCKET_S)) + 1  # at least the current bucket
        found: dict[int, dict[str, list[Any]]] = {}
        for (rid, port), ring in sorted(self._series.items()):
            if rid != reader:
                continue
            points = ring.points(first, last)
            found[port] = {
                "t": [bucket * BUCKET_S for bucket, _, _ in points],
                "reads_per_s": [round(reads / BUCKET_S, 2) for _, reads, _ in points],
                "rssi_dbm": [None if r is None else round(r, 1) for _, _, r in points],
            }
        return found

    def reads_since(self, reader: str, since_s: float, now_s: float) -> dict[int, int]:
        """Reads per port of this reader from `since_s` to `now_s`."""
        first, last = int(since_s // BUCKET_S), int(now_s // BUCKET_S)
        return {
            port: sum(reads for _, reads, _ in ring.points(first, last))
            for (rid, port), ring in self._series.items()
            if rid == reader
        }


@dataclass(frozen=True, slots=True)
class TagInView:
    """A tag this reader sees: peak RSSI per antenna, reads, how long it has been in view."""

    epc_hex: str
    uri: str
    reads: int
    in_view_s: float
    peak_by_antenna: dict[int, float | None]

    def as_json(self) -> dict[str, Any]:
        """The page's row."""
        return {
            "epc": self.epc_hex,
            "uri": self.uri,
            "reads": self.reads,
            "in_view_s": round(self.in_view_s, 1),
            "antennas": {
                str(p): None if r is None else round(r, 1)
                for p, r in sorted(self.peak_by_antenna.items())
            },
        }


@dataclass(frozen=True, slots=True)
class Split:
    """Tags in view of one reader: crossing (a visit with a direction), parked, the rest."""

    crossing: list[TagInView] = field(default_factory=list)
    parked: list[TagInView] = field(default_factory=list)
    passing: list[TagInView] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A change worth trying, why (the evidence), and the profiles that would make it."""

    key: str
    antenna: int | None
    text: str
    evidence: list[str]
    options: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        """The page's suggestion."""
        return {
            "id": self.key,
            "antenna": self.antenna,
            "text": self.text,
            "evidence": self.evidence,
            "options": self.options,
        }


def crossed_items(activity: Iterable[Mapping[str, Any]]) -> set[str]:
    """Items (EPC URIs) of recent visits that had a direction: these tags crossed the portal."""
    return {
        str(e["item"])
        for e in activity
        if e.get("direction") in CROSSING_DIRECTIONS and e.get("item")
    }


def split_tags(
    reader: str,
    tags: Iterable[TagSeen],
    crossed: Collection[str],
    parked_after_s: float = DEFAULT_PARKED_AFTER_S,
) -> Split:
    """This reader's tags in view: crossing, parked (that long in view, never crossing), others."""
    split = Split()
    for tag in tags:
        peaks = {
            port: tag.peak_by_antenna.get((rid, port))
            for (rid, port) in tag.antennas
            if rid == reader
        }
        if not peaks:
            continue
        seen = TagInView(
            tag.epc_hex,
            tag.uri or "",
            sum(n for (rid, _), n in tag.antennas.items() if rid == reader),
            tag.last_seen_s - tag.first_seen_s,
            peaks,
        )
        if (tag.uri or tag.epc_hex) in crossed or tag.epc_hex in crossed:
            split.crossing.append(seen)
        elif seen.in_view_s >= parked_after_s:
            split.parked.append(seen)
        else:
            split.passing.append(seen)
    for kept in (split.crossing, split.parked, split.passing):
        kept.sort(key=lambda t: t.epc_hex)
    return split


def suggest(
    reader: str,
    split: Split,
    profile: Profile | None,
    reads_last_10_min: Mapping[int, int],
) -> list[Suggestion]:
    """Suggestions for this reader from its parked tags and silent antennas, each with evidence."""
    found = [
        s
        for port in sorted({p for t in split.parked for p in t.peak_by_antenna})
        if (s := _parked_suggestion(reader, port, split, profile)) is not None
    ]
    found += _silent_suggestions(profile, reads_last_10_min)
    return found


def _parked_suggestion(
    reader: str, port: int, split: Split, profile: Profile | None
) -> Suggestion | None:
    parked = [peak for t in split.parked if (peak := t.peak_by_antenna.get(port)) is not None]
    if len(parked) < PARKED_TAGS_MIN:
        return None
    typical = statistics.median(parked)
    floor = math.ceil(max(parked) + FLOOR_MARGIN_DB)
    # The floor is the reader's, for every antenna: a crossing tag is lost only if even its
    # strongest antenna reads it below the floor.
    crossing = [
        max(peaks)
        for t in split.crossing
        if (peaks := [p for p in t.peak_by_antenna.values() if p is not None])
    ]
    evidence = [
        f"{len(parked)} tags in view of antenna {port} for minutes without crossing the portal",
        f"their peak RSSI on antenna {port}: median {typical:.1f} dBm, strongest {max(parked):.1f}",
    ]
    if crossing:
        cut = sum(1 for p in crossing if p < floor)
        spread = f"{min(crossing):.1f}"
        if max(crossing) != min(crossing):
            spread += f" to {max(crossing):.1f}"
        evidence.append(
            f"{len(crossing)} crossing tags peak at {spread} dBm on their strongest antenna"
            + (f"; a floor of {floor} dBm would lose {cut} of them" if cut else "")
        )
    else:
        evidence.append("no crossing tag in view now to compare with")
    text = (
        f"antenna {port} reads {len(parked)} parked tags at {typical:.0f} dBm: lower its power "
        f"by {POWER_STEP_DOWN_DB:.0f} dB or set an RSSI floor of {floor} dBm"
    )
    options: list[dict[str, Any]] = []
    if profile is not None:
        options = _options(profile, port, floor, text)
    else:
        evidence.append(f"no LLRP profile in force on {reader}: change it on the reader itself")
    return Suggestion(f"parked-{port}", port, text, evidence, options)


def _options(profile: Profile, port: int, floor: int, why: str) -> list[dict[str, Any]]:
    options = []
    data = profile.model_dump(mode="json")
    antenna = next((a for a in data["antennas"] if a["port"] == port), None)
    if antenna is not None:
        lower = {**data, "antennas": [dict(a) for a in data["antennas"]]}
        for a in lower["antennas"]:
            if a["port"] == port:
                a["power_dbm"] = a["power_dbm"] - POWER_STEP_DOWN_DB
        options.append(
            _option(
                lower,
                f"antenna {port}: {antenna['power_dbm']} → "
                f"{antenna['power_dbm'] - POWER_STEP_DOWN_DB} dBm",
                why,
            )
        )
    if floor > profile.reader.rssi_floor_dbm:
        floored = {**data, "reader": {**data["reader"], "rssi_floor_dbm": float(floor)}}
        options.append(
            _option(
                floored,
                f"RSSI floor (all antennas): {profile.reader.rssi_floor_dbm} → {floor} dBm",
                why,
            )
        )
    return [o for o in options if o]


def _silent_suggestions(profile: Profile | None, reads: Mapping[int, int]) -> list[Suggestion]:
    others = sum(reads.values())
    if others < SILENT_OTHERS_MIN_READS or profile is None:
        return []
    found = []
    for antenna in profile.antennas:
        if not antenna.enabled or reads.get(antenna.port, 0) > 0:
            continue
        busy = ", ".join(f"{p}: {n}" for p, n in sorted(reads.items()) if n)
        text = (
            f"antenna {antenna.port} read nothing in {SILENT_WINDOW_S / 60:.0f} min while the "
            f"others read {others}: check its cable and connector, or disable it"
        )
        evidence = [
            f"reads in the last {SILENT_WINDOW_S / 60:.0f} min by antenna: {busy}",
            (
                f"antenna {antenna.port} is enabled in {profile.name} v{profile.version} "
                f"at {antenna.power_dbm} dBm"
            ),
        ]
        data = profile.model_dump(mode="json")
        data["antennas"] = [
            {**a, "enabled": False} if a["port"] == antenna.port else a for a in data["antennas"]
        ]
        options = [_option(data, f"disable antenna {antenna.port}", text)]
        found.append(
            Suggestion(
                f"silent-{antenna.port}", antenna.port, text, evidence, [o for o in options if o]
            )
        )
    return found


def _option(data: dict[str, Any], label: str, why: str) -> dict[str, Any]:
    """A proposed profile (next version, same name), or {} if it would not pass the checks."""
    proposed = {
        **data,
        "version": int(data["version"]) + 1,
        "description": f"suggested by the console: {why}"[:500],
    }
    try:
        # parse_profile checks the model's limits too: power already at its minimum fails here.
        profile = parse_profile(proposed, source="suggestion")
    except ConfigError:
        return {}
    return {"label": label, "profile": profile.model_dump(mode="json")}


def reader_tuning(
    reader: str,
    history: AntennaHistory,
    tags: Sequence[TagSeen],
    activity: Iterable[Mapping[str, Any]],
    profile: Profile | None,
    *,
    now_s: float,
    parked_after_s: float = DEFAULT_PARKED_AFTER_S,
) -> dict[str, Any]:
    """Everything one reader's tuning page shows, as JSON."""
    split = split_tags(reader, tags, crossed_items(activity), parked_after_s)
    reads = history.reads_since(reader, now_s - SILENT_WINDOW_S, now_s)
    return {
        "reader": reader,
        "now_s": now_s,
        "bucket_s": BUCKET_S,
        "window_s": HISTORY_BUCKETS * BUCKET_S,
        "parked_after_s": parked_after_s,
        "profile": None if profile is None else f"{profile.name} v{profile.version}",
        "antennas": {str(p): s for p, s in history.series(reader, now_s).items()},
        "crossing": [t.as_json() for t in split.crossing[:200]],
        "parked": [t.as_json() for t in split.parked[:200]],
        "passing": len(split.passing),
        "suggestions": [s.as_json() for s in suggest(reader, split, profile, reads)],
    }
