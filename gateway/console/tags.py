"""Tags in view: a bounded table fed from every tag read, cheap on the read path, read by the page.

`observe()` runs once per read on the daemon's loop: a dict lookup and a few attribute updates, no
clock call, no decoding. Decoding (EPC to pure-identity URI, GTIN) and expiry happen in `tick()`,
which the console's feed calls a few times a second, so their cost does not grow with the read rate.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from gateway.console.tuning import AntennaHistory
from gateway.domain.epc import decode_epc_or_raw
from gateway.domain.events import TagRead
from gateway.errors import ParseError

DEFAULT_MAX_TAGS = 5000
DEFAULT_EXPIRE_S = 30.0
# When full, evict this share of the oldest entries at once: eviction stays O(1) per read.
_EVICT_SHARE = 0.1

Row = tuple[str, str, str, str, int, float | None, float, str, str]
"""A tag as the page shows it: hex, URI, reader, antennas, reads, peak dBm, seen, GTIN, serial."""


class TagSeen:
    """One tag in view: counts and peak RSSI per (reader, antenna), first and last read time."""

    __slots__ = (
        "antennas",
        "epc_hex",
        "first_seen_s",
        "gtin",
        "last_seen_s",
        "peak_by_antenna",
        "peak_rssi_dbm",
        "reader",
        "reads",
        "seen_tick",
        "serial",
        "uri",
    )

    def __init__(self, epc_hex: str) -> None:
        self.epc_hex = epc_hex
        self.reader = ""
        self.antennas: dict[tuple[str, int], int] = {}
        self.peak_by_antenna: dict[tuple[str, int], float] = {}
        self.reads = 0
        self.peak_rssi_dbm: float | None = None
        self.first_seen_s = 0.0
        self.last_seen_s = 0.0
        self.seen_tick = 0.0
        self.uri: str | None = None
        self.gtin = ""
        self.serial = ""

    def row(self) -> Row:
        """The page's row (URI decoded at the first tick that saw the tag)."""
        antennas = " ".join(
            f"{port}:{count}" if reader == self.reader else f"{reader}#{port}:{count}"
            for (reader, port), count in sorted(self.antennas.items())
        )
        return (
            self.epc_hex,
            self.uri or "",
            self.reader,
            antennas,
            self.reads,
            self.peak_rssi_dbm,
            round(self.last_seen_s, 3),
            self.gtin,
            self.serial,
        )


@dataclass(frozen=True, slots=True)
class TagChanges:
    """What changed in the table since the last tick."""

    changed: list[TagSeen]
    removed: list[str]
    in_view: int


class TagsInView:
    """Tags read in the last `expire_s` seconds, at most `max_tags` of them (oldest go first)."""

    def __init__(
        self, max_tags: int = DEFAULT_MAX_TAGS, expire_s: float = DEFAULT_EXPIRE_S
    ) -> None:
        self.max_tags = max_tags
        self.expire_s = expire_s
        self.evicted = 0
        self.reads_by_antenna: dict[tuple[str, int], int] = {}
        self.history = AntennaHistory()
        self._rssi: dict[tuple[str, int], list[float]] = {}  # [sum, count] since last recorded
        self._recorded: dict[tuple[str, int], int] = {}
        self._tags: dict[str, TagSeen] = {}
        self._changed: set[str] = set()
        self._removed: set[str] = set()
        self._tick_s = 0.0

    def __len__(self) -> int:
        return len(self._tags)

    def observe(self, read: TagRead) -> None:
        """Count one tag read (the per-read path: keep it small)."""
        epc = read.epc_hex
        tag = self._tags.get(epc)
        if tag is None:
            if len(self._tags) >= self.max_tags:
                self._evict()
            tag = self._tags[epc] = TagSeen(epc)
            tag.first_seen_s = read.at_s
        key = (read.reader, read.antenna)
        count = read.read_count
        tag.reader = read.reader
        tag.antennas[key] = tag.antennas.get(key, 0) + count
        tag.reads += count
        rssi = read.rssi_dbm
        if rssi is not None:
            if tag.peak_rssi_dbm is None or rssi > tag.peak_rssi_dbm:
                tag.peak_rssi_dbm = rssi
            if rssi > tag.peak_by_antenna.get(key, -1000.0):
                tag.peak_by_antenna[key] = rssi
            signal = self._rssi.get(key)
            if signal is None:
                self._rssi[key] = [rssi, 1.0]
            else:
                signal[0] += rssi
                signal[1] += 1.0
        tag.last_seen_s = read.at_s
        tag.seen_tick = self._tick_s
        self._changed.add(epc)
        self.reads_by_antenna[key] = self.reads_by_antenna.get(key, 0) + count

    def record_history(self, at_s: float) -> None:
        """Move the reads and RSSI counted since the last call into the bucket of `at_s`."""
        # Called by the feed's tick (twice a second), so the read path only adds to two dicts.
        signals, self._rssi = self._rssi, {}
        for key, total in self.reads_by_antenna.items():
            count = total - self._recorded.get(key, 0)
            signal = signals.get(key)
            if count or signal:
                rssi_sum, rssi_n = signal or (0.0, 0.0)
                self.history.add(key, at_s, count, rssi_sum, int(rssi_n))
                self._recorded[key] = total

    def tick(self, now_s: float) -> TagChanges:
        """Expire tags unseen for `expire_s` (by `now_s`, any monotonic clock), decode new ones."""
        self._tick_s = now_s
        horizon = now_s - self.expire_s
        for epc in [epc for epc, tag in self._tags.items() if tag.seen_tick < horizon]:
            del self._tags[epc]
            self._removed.add(epc)
        changed = []
        for epc in self._changed:
            tag = self._tags.get(epc)
            if tag is None:
                continue
            if tag.uri is None:
                _decode(tag)
            changed.append(tag)
            self._removed.discard(epc)
        removed = sorted(self._removed)
        self._changed = set()
        self._removed = set()
        return TagChanges(changed=changed, removed=removed, in_view=len(self._tags))

    def all(self) -> list[TagSeen]:
        """Every tag in view now, decoded (for a page that connects or must catch up)."""
        for tag in self._tags.values():
            if tag.uri is None:
                _decode(tag)
        return list(self._tags.values())

    def _evict(self) -> None:
        count = max(1, int(self.max_tags * _EVICT_SHARE))
        for epc in list(itertools.islice(self._tags, count)):
            del self._tags[epc]
            self._removed.add(epc)
        self.evicted += count


def matches(tag: TagSeen, wanted: str) -> bool:
    """Whether a tag fits a filter: EPC hex prefix, pure-identity URI prefix, or GTIN."""
    if not wanted:
        return True
    if wanted.startswith("urn:"):
        return (tag.uri or "").startswith(wanted)
    if wanted.isdigit() and 8 <= len(wanted) <= 14 and tag.gtin == wanted.zfill(14):
        return True
    return tag.epc_hex.startswith(wanted.upper())


def _decode(tag: TagSeen) -> None:
    try:
        epc = decode_epc_or_raw(tag.epc_hex)
    except ParseError:
        tag.uri = f"(not hex) {tag.epc_hex[:64]}"
        return
    tag.uri = epc.uri
    tag.gtin = epc.fields.get("gtin", "")
    tag.serial = epc.fields.get("serial", "")
