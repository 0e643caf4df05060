"""The pipeline: raw events in, movements out. Pure: time is passed in, state snapshots to JSON.

Expected returns are not part of the snapshot: the daemon keeps them in its buffer, asks
`lookup_keys` what a batch may touch, loads those RMAs into `expected` (a slice) before feeding
the batch, and stores `expected.take_updates()` with the movements.

Event time (the `at_s` the readers stamped) decides visits, RMA timeouts and movement ids, so a
pipeline rebuilt after a crash by replaying the journal from its checkpoint derives the same
movements with the same ids. A monotonic clock passed to `tick` only moves event time forward
between events, so wall-clock jumps never stall or split visits by themselves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.domain.barcodes import DEFAULT_PATTERNS, Barcode, Gs1Syntax, Patterns, parse_barcode
from gateway.domain.epc import decode_epc, raw_uri
from gateway.domain.events import BarcodeScan, RawEvent, TagRead
from gateway.domain.expected import ExpectedReturns, LookupKey, lookup_keys
from gateway.domain.gs1_rules import BUILTIN_RULES, RuleTable
from gateway.domain.movements import (
    Direction,
    Evidence,
    Item,
    Movement,
    MovementType,
    StationKind,
    movement_id,
)
from gateway.domain.smoothing import SmoothingSettings, Visit, VisitTracker, ZoneMap
from gateway.domain.workflows import StationContext, StationWorkflow
from gateway.errors import InputError, ParseError

SNAPSHOT_VERSION = 1
LIVE_WINDOW_S = 5.0
MAX_NOTICES = 1000
# Decoded EPCs kept for `lookup_keys`, which asks again about every open visit on each step.
EPC_KEY_CACHE_MAX = 20_000
CONTROL_KINDS = frozenset({"rma", "rma-close", "disposition", "location"})


@dataclass(frozen=True, slots=True)
class StationPlan:
    """What the pipeline needs to know about one station."""

    id: str
    kind: StationKind
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    rescan_window_s: float = 5.0
    rma_timeout_s: float = 900.0
    location: str | None = None


@dataclass(frozen=True, slots=True)
class PipelinePlan:
    """Everything the pipeline is configured with, and the GS1 grammar its scans are read with."""

    gateway: str
    stations: Mapping[str, StationPlan]
    gs1: Gs1Syntax
    zones: Mapping[str, Mapping[str, Sequence[int]]] = field(default_factory=dict)
    patterns: Patterns | None = None
    rules: RuleTable = BUILTIN_RULES
    reader_floors_dbm: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notice:
    """Something worth a log line that made no movement (a stray, a rescan, a bad scan, ...)."""

    event: str
    station: str
    fields: tuple[tuple[str, object], ...] = ()


class Pipeline:
    """Turns raw events into movements per station kind; see the module docstring for time."""

    def __init__(
        self,
        plan: PipelinePlan,
        snapshot: Mapping[str, Any] | None = None,
        expected: ExpectedReturns | None = None,
    ) -> None:
        self.plan = plan
        # Only receiving stations consult the expected-returns registry.
        self._receiving = frozenset(s for s, sp in plan.stations.items() if sp.kind == "receiving")
        self.counters: Counter[str] = Counter()
        self.expected = expected if expected is not None else ExpectedReturns()
        # Registry entries found in a snapshot of an older version (before the buffer kept them).
        self.legacy_expected: list[dict[str, Any]] = []
        self._epc_keys: dict[str, list[LookupKey]] = {}
        # Barcodes `lookup_keys` parsed for the batch about to be fed: parsed once, not twice.
        self._parsed: dict[str, Barcode | ParseError] = {}
        self._pending_keys_generation = -1  # the slice generation open visits were looked up in
        self._notices: list[Notice] = []
        self._anchor: tuple[float, float] | None = None
        self._last_event_s: float | None = None
        zone_maps = {reader: ZoneMap.from_config(zones) for reader, zones in plan.zones.items()}
        self._zone_maps = zone_maps
        self._trackers = {
            sid: VisitTracker(sid, sp.smoothing, zone_maps) for sid, sp in plan.stations.items()
        }
        self._workflows = {
            sid: StationWorkflow(sid, sp.rma_timeout_s, sp.rescan_window_s)
            for sid, sp in plan.stations.items()
        }
        if snapshot is not None:
            self._restore(snapshot)

    # -- input ---------------------------------------------------------------------------------

    def feed(self, event: RawEvent, mono_s: float) -> list[Movement]:
        """Take one raw event; scans may make movements at once, tag reads wait for their visit."""
        self._advance(event.at_s, mono_s)
        station = self.plan.stations.get(event.station)
        if station is None:
            self.counters["unknown_station"] += 1
            self._notice("event_for_unknown_station", event.station, reader=event.reader)
            return []
        if isinstance(event, TagRead):
            self.counters["tag_reads"] += 1
            floor = self.plan.reader_floors_dbm.get(event.reader)
            if floor is not None and event.rssi_dbm is not None and event.rssi_dbm < floor:
                self.counters["reads_below_reader_floor"] += 1
                return []
            self._trackers[station.id].observe(event)
            return []
        self.counters["scans"] += 1
        return self._scan(station, event)

    def tick(
        self, mono_s: float, wall_s: float | None = None, heard_mono_s: float | None = None
    ) -> list[Movement]:
        """Close visits that ended by now and turn them into movements.

        With `wall_s` and live input (event time within LIVE_WINDOW_S of it), visits close on
        the wall clock, so the reader's reporting delay does not hold them back; a replay of old
        events or a jumped clock falls back to event time projected by the monotonic clock.
        `heard_mono_s` holds both clocks back to the monotonic time up to which the readers'
        input has been heard: reads still waiting in a socket or a queue (a starved, frozen or
        stalled daemon) keep their visits open instead of finding them closed.
        """
        if heard_mono_s is not None and heard_mono_s < mono_s:
            if wall_s is not None:
                wall_s -= mono_s - heard_mono_s
            mono_s = heard_mono_s
        if self._anchor is None and self._last_event_s is not None:
            # Restored from a snapshot: event time goes on from the last event it had seen.
            self._anchor = (self._last_event_s, mono_s)
        now_s = self.event_now(mono_s)
        if now_s is None:
            return []
        if wall_s is not None and abs(wall_s - now_s) <= LIVE_WINDOW_S:
            now_s = max(now_s, wall_s)
        movements: list[Movement] = []
        for station_id, tracker in self._trackers.items():
            for visit in tracker.expire(now_s):
                movements.extend(self._visit(self.plan.stations[station_id], visit))
        for rma in self.expected.expire(now_s):
            self._notice("rma_expired", "", rma=rma)
        return movements

    def event_now(self, mono_s: float) -> float | None:
        """Event time now: the latest event time, moved on by the monotonic time since it came."""
        if self._anchor is None:
            return None
        at_s, anchored_mono_s = self._anchor
        return at_s + max(0.0, mono_s - anchored_mono_s)

    def take_notices(self) -> list[Notice]:
        """Notices since the last call (bounded; overflow is counted)."""
        notices, self._notices = self._notices, []
        return notices

    def open_visits(self) -> int:
        """Tag visits still open at every station."""
        return sum(tracker.open_visits() for tracker in self._trackers.values())

    def apply_expected_returns(self, command: dict[str, Any]) -> dict[str, Any]:
        """Apply an expected-returns command to the in-memory registry (InputError if bad)."""
        return self.expected.apply(command)

    def lookup_keys(self, events: Sequence[RawEvent]) -> set[LookupKey]:
        """Registry lookups that feeding `events` and the next `tick` may make (receipts only)."""
        keys: set[LookupKey] = set()
        if not self._receiving:
            return keys
        self._parsed.clear()
        for event in events:
            if event.station not in self._receiving:
                continue
            if isinstance(event, TagRead):
                keys.update(self._keys_of_epc(event.epc_hex))
                continue
            parsed = self._parse(event.data)
            self._parsed[event.data] = parsed
            if isinstance(parsed, Barcode) and parsed.kind not in CONTROL_KINDS:
                keys.update(lookup_keys(_item_from_barcode(parsed)))
        if self.expected.generation != self._pending_keys_generation:
            # Visits still open close in a later step, perhaps after the slice was dropped: their
            # keys were looked up with their reads, so only a slice dropped since needs them again.
            keys.update(self.pending_lookup_keys())
        return keys

    def pending_lookup_keys(self) -> set[LookupKey]:
        """Registry lookups that closing the visits still pending may make (receipts only).

        Notes the registry's generation: `lookup_keys` asks again only after the next `forget`.
        """
        keys: set[LookupKey] = set()
        self._pending_keys_generation = self.expected.generation
        for sid in self._receiving:
            for epc_hex in self._trackers[sid].pending_epcs():
                keys.update(self._keys_of_epc(epc_hex))
        return keys

    # -- state ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state; with the journal cursor it rebuilds the pipeline after a restart."""
        return {
            "v": SNAPSHOT_VERSION,
            "last_event_s": self._last_event_s,
            "trackers": {sid: t.snapshot() for sid, t in self._trackers.items()},
            "workflows": {sid: w.snapshot() for sid, w in self._workflows.items()},
        }

    def _restore(self, snapshot: Mapping[str, Any]) -> None:
        if snapshot.get("v") != SNAPSHOT_VERSION:
            self._notice("pipeline_snapshot_ignored", "", version=snapshot.get("v"))
            return
        for sid, data in snapshot.get("trackers", {}).items():
            plan = self.plan.stations.get(sid)
            if plan is None:
                continue
            try:
                self._trackers[sid] = VisitTracker.restore(
                    sid, plan.smoothing, self._zone_maps, data
                )
            except InputError as exc:
                # Open visits are lost, not the daemon: the journal replay rebuilds what it can.
                self._notice("tracker_snapshot_ignored", sid, reason=exc.reason)
        for sid, data in snapshot.get("workflows", {}).items():
            if sid in self._workflows:
                self._workflows[sid].restore(data)
        legacy = snapshot.get("expected")
        if isinstance(legacy, list):
            self.legacy_expected = legacy
        self._last_event_s = snapshot.get("last_event_s")

    # -- private -------------------------------------------------------------------------------

    def _advance(self, at_s: float, mono_s: float) -> None:
        if self._anchor is None and self._last_event_s is not None:
            # Restored: event time goes on from the last event seen, even if this one's clock
            # jumped back (a reader reset to 1970 must not hold restored visits open for years).
            self._anchor = (self._last_event_s, mono_s)
        projected = self.event_now(mono_s)
        if projected is None or at_s > projected:
            self._anchor = (at_s, mono_s)
        if self._last_event_s is None or at_s > self._last_event_s:
            self._last_event_s = at_s

    def _scan(self, station: StationPlan, scan: BarcodeScan) -> list[Movement]:
        barcode = self._parsed.get(scan.data) or self._parse(scan.data)
        if isinstance(barcode, ParseError):
            self.counters["bad_scans"] += 1
            self._notice(
                "scan_rejected",
                station.id,
                reader=scan.reader,
                data=scan.data[:64],
                reason=str(barcode),
            )
            return []
        workflow = self._workflows[station.id]
        if barcode.kind in CONTROL_KINDS:
            change = workflow.control(barcode, scan.at_s)
            self._notice(change or "control_scan_ignored", station.id, value=barcode.value)
            return []
        item = _item_from_barcode(barcode)
        if workflow.is_rescan(item.key, scan.at_s):
            self.counters["rescans"] += 1
            self._notice("rescan_ignored", station.id, item=item.key, reader=scan.reader)
            return []
        evidence = Evidence(
            source="barcode",
            reader=scan.reader,
            first_seen_s=scan.at_s,
            last_seen_s=scan.at_s,
            data=scan.data,
        )
        context = workflow.context(scan.at_s)
        return self._movements(station, item, evidence, context, "none", scan.at_s)

    def _visit(self, station: StationPlan, visit: Visit) -> list[Movement]:
        if visit.stray:
            self.counters["strays"] += 1
            self._notice(
                "stray_tag",
                station.id,
                epc=visit.epc_hex,
                reason=visit.reason,
                reader=visit.reader,
                zones=list(visit.zones),
                reads=visit.reads,
                peak_rssi_dbm=visit.peak_rssi_dbm,
            )
            return []
        if visit.direction in ("in-out", "out-in"):
            self.counters["reversed_passages"] += 1
            self._notice(
                "passage_reversed",
                station.id,
                epc=visit.epc_hex,
                direction=visit.direction,
                reader=visit.reader,
                zones=list(visit.zones),
                reads=visit.reads,
                confidence=round(visit.confidence, 3),
            )
            return []
        direction: Direction = (
            "in" if visit.direction == "in" else ("out" if visit.direction == "out" else "none")
        )
        if station.kind == "receiving" and (
            direction != "in" or visit.confidence < station.smoothing.min_confidence
        ):
            self.counters["not_inward"] += 1
            self._notice(
                "visit_not_inward",
                station.id,
                epc=visit.epc_hex,
                direction=visit.direction,
                confidence=round(visit.confidence, 3),
            )
            return []
        both_zones = {"outside", "inside"} <= set(visit.zones)
        if station.kind in ("restock", "disposal") and (
            direction == "out" or (both_zones and direction != "in")
        ):
            # A portal that saw both sides must see the item go in; unclear passages make nothing.
            self.counters["not_inward"] += 1
            self._notice(
                "visit_not_inward", station.id, epc=visit.epc_hex, direction=visit.direction
            )
            return []
        item = self._item_from_epc(visit.epc_hex, station.id)
        evidence = Evidence(
            source="rfid",
            reader=visit.reader,
            first_seen_s=visit.first_seen_s,
            last_seen_s=visit.last_seen_s,
            reads=visit.reads,
            antennas=visit.antennas,
            zones=visit.zones,
            peak_rssi_dbm=visit.peak_rssi_dbm,
            direction_confidence=visit.confidence,
        )
        context = self._workflows[station.id].context(visit.last_seen_s)
        return self._movements(station, item, evidence, context, direction, visit.first_seen_s)

    def _movements(
        self,
        station: StationPlan,
        item: Item,
        evidence: Evidence,
        context: StationContext,
        direction: Direction,
        start_s: float,
    ) -> list[Movement]:
        gateway = self.plan.gateway
        occurred_at_s = evidence.last_seen_s
        if station.kind == "receiving":
            return self._receipt(station, item, evidence, context, direction, start_s)
        kind: MovementType
        flags: tuple[str, ...] = ()
        disposition = context.disposition
        location = None
        if station.kind == "inspection":
            kind = "inspection"
            if disposition is None:
                flags = ("no-disposition",)
        elif station.kind == "restock":
            kind = "restock"
            location = context.location or station.location
            if location is None:
                flags = ("no-location",)
        else:
            kind = "disposal"
        self.counters[f"movements_{kind}"] += 1
        return [
            Movement(
                id=movement_id(gateway, item.key, station.id, kind, start_s),
                type=kind,
                occurred_at_s=occurred_at_s,
                station=station.id,
                item=item,
                evidence=evidence,
                direction=direction,
                rma=context.rma,
                disposition=disposition,
                location=location,
                flags=flags,
            )
        ]

    def _receipt(
        self,
        station: StationPlan,
        item: Item,
        evidence: Evidence,
        context: StationContext,
        direction: Direction,
        start_s: float,
    ) -> list[Movement]:
        gateway = self.plan.gateway
        match = self.expected.match(item)
        rma = match.rma if match is not None else context.rma
        flags: tuple[str, ...] = ()
        completed = False
        if match is not None:
            serialised = item.epc is not None or item.serial is not None
            outcome, completed = self.expected.receive(match, item.key, serialised=serialised)
            if outcome != "new":
                flags = (outcome,)
                self.counters[f"{outcome}_receipts"] += 1
                self._notice(f"{outcome}_receipt", station.id, item=item.key, rma=match.rma)
        if context.rma is not None:
            self._workflows[station.id].touch_rma(evidence.last_seen_s)
        self.counters["movements_receipt"] += 1
        movements = [
            Movement(
                id=movement_id(gateway, item.key, station.id, "receipt", start_s),
                type="receipt",
                occurred_at_s=evidence.last_seen_s,
                station=station.id,
                item=item,
                evidence=evidence,
                direction=direction,
                rma=rma,
                expected=match is not None,
                flags=flags,
            )
        ]
        if completed and match is not None:
            self.counters["movements_rma_complete"] += 1
            movements.append(
                Movement(
                    id=movement_id(gateway, f"rma:{match.rma}", station.id, "rma-complete", 0.0),
                    type="rma-complete",
                    occurred_at_s=evidence.last_seen_s,
                    station=station.id,
                    item=Item(code=match.rma),
                    evidence=Evidence(
                        source="system",
                        reader=evidence.reader,
                        first_seen_s=evidence.first_seen_s,
                        last_seen_s=evidence.last_seen_s,
                    ),
                    rma=match.rma,
                    expected=True,
                )
            )
        return movements

    def _parse(self, data: str) -> Barcode | ParseError:
        try:
            return parse_barcode(
                data,
                self.plan.patterns or DEFAULT_PATTERNS,
                gs1=self.plan.gs1,
                rules=self.plan.rules,
            )
        except ParseError as exc:
            return exc

    def _keys_of_epc(self, epc_hex: str) -> list[LookupKey]:
        keys = self._epc_keys.get(epc_hex)
        if keys is None:
            try:
                epc = decode_epc(epc_hex)
            except ParseError:
                keys = [("epc", raw_uri(epc_hex))]
            else:
                fields = epc.fields
                keys = lookup_keys(
                    Item(epc=epc.uri, gtin=fields.get("gtin"), serial=fields.get("serial"))
                )
            if len(self._epc_keys) >= EPC_KEY_CACHE_MAX:
                self._epc_keys.clear()
            self._epc_keys[epc_hex] = keys
        return keys

    def _item_from_epc(self, epc_hex: str, station: str) -> Item:
        try:
            epc = decode_epc(epc_hex)
        except ParseError as exc:
            # A tag that passed the door is still an item: keep it under its raw identity.
            self.counters["epc_undecodable"] += 1
            self._notice("epc_undecodable", station, epc=epc_hex, reason=exc.reason)
            return Item(epc=raw_uri(epc_hex))
        fields = epc.fields
        return Item(
            epc=epc.uri,
            gtin=fields.get("gtin"),
            serial=fields.get("serial"),
            sscc=fields.get("sscc"),
            grai=fields.get("grai"),
        )

    def _notice(self, event: str, station: str, **fields: object) -> None:
        if len(self._notices) >= MAX_NOTICES:
            self.counters["notices_dropped"] += 1
            return
        self._notices.append(Notice(event, station, tuple(fields.items())))


def _item_from_barcode(barcode: Barcode) -> Item:
    if barcode.gtin is not None:
        return Item(gtin=barcode.gtin, serial=barcode.serial)
    if barcode.sscc is not None:
        return Item(sscc=barcode.sscc)
    if barcode.grai is not None:
        return Item(grai=barcode.grai)
    return Item(code=barcode.giai or barcode.value)
