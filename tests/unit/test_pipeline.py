"""The pipeline: scan workflows at every station kind, expected returns, RFID rules, restarts."""

from __future__ import annotations

import json
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.events import BarcodeScan, RawEvent, TagRead
from gateway.domain.movements import Movement
from gateway.domain.pipeline import Pipeline, PipelinePlan, StationPlan
from gateway.domain.smoothing import SmoothingSettings
from gateway.gs1 import BIIP_GS1
from tests.support.scans import item_scan

T0 = 1_795_000_000.0
PLAN = PipelinePlan(
    gateway="dock-3",
    stations={
        "door-3": StationPlan(
            id="door-3", kind="receiving", rescan_window_s=5.0, rma_timeout_s=600
        ),
        "bench-1": StationPlan(id="bench-1", kind="inspection"),
        "restock-1": StationPlan(id="restock-1", kind="restock"),
        "shelf-door": StationPlan(id="shelf-door", kind="restock", location="LOC-DEFAULT"),
        "recycle-1": StationPlan(id="recycle-1", kind="disposal"),
    },
    zones={"portal": {"outside": [1, 2], "inside": [3, 4]}},
    gs1=BIIP_GS1,
)


def scan(data: str, at_s: float, station: str = "door-3") -> BarcodeScan:
    return BarcodeScan(reader="hh-1", station=station, data=data, at_s=at_s)


def run(
    pipeline: Pipeline, events: Iterable[RawEvent], end_s: float | None = None
) -> list[Movement]:
    """Feed events with the monotonic clock equal to event time, then let visits end."""
    out: list[Movement] = []
    last = T0
    for event in events:
        out += pipeline.feed(event, event.at_s)
        out += pipeline.tick(event.at_s)
        last = event.at_s
    out += pipeline.tick(end_s if end_s is not None else last + 60)
    return out


def test_receiving_scan_makes_a_receipt() -> None:
    movements = run(Pipeline(PLAN), [scan(item_scan(1), T0)])
    assert len(movements) == 1
    receipt = movements[0]
    assert receipt.type == "receipt"
    assert receipt.item.gtin is not None
    assert receipt.item.serial == "00000001"
    assert receipt.rma is None
    assert receipt.expected is False
    assert receipt.evidence.source == "barcode"


def test_rma_label_opens_until_closed_switched_or_timed_out() -> None:
    events = [
        scan("RMA-000123", T0),
        scan(item_scan(1), T0 + 1),
        scan(item_scan(2), T0 + 2),
        scan("RMA-000124", T0 + 3),
        scan(item_scan(3), T0 + 4),
        scan("RMA-CLOSE", T0 + 5),
        scan(item_scan(4), T0 + 6),
        scan("RMA-000125", T0 + 7),
        scan(item_scan(5), T0 + 7 + 601),
    ]
    rmas = [m.rma for m in run(Pipeline(PLAN), events)]
    assert rmas == ["RMA-000123", "RMA-000123", "RMA-000124", None, None]


def test_inspection_disposition_applies_to_following_items() -> None:
    events = [
        scan(item_scan(1), T0, "bench-1"),
        scan("DISP-REPAIR", T0 + 1, "bench-1"),
        scan(item_scan(2), T0 + 2, "bench-1"),
        scan("DISP-RECYCLE", T0 + 3, "bench-1"),
        scan(item_scan(3), T0 + 4, "bench-1"),
    ]
    movements = run(Pipeline(PLAN), events)
    assert [(m.type, m.disposition) for m in movements] == [
        ("inspection", None),
        ("inspection", "repair"),
        ("inspection", "recycle"),
    ]
    assert movements[0].flags == ("no-disposition",)


def test_restock_location_then_items_and_default_location() -> None:
    events = [
        scan("LOC-A-01-3", T0, "restock-1"),
        scan(item_scan(1), T0 + 1, "restock-1"),
        scan(item_scan(2), T0 + 2, "shelf-door"),
    ]
    movements = run(Pipeline(PLAN), events)
    assert [(m.type, m.location) for m in movements] == [
        ("restock", "LOC-A-01-3"),
        ("restock", "LOC-DEFAULT"),
    ]


def test_disposal_scans() -> None:
    movements = run(Pipeline(PLAN), [scan(item_scan(9), T0, "recycle-1")])
    assert [m.type for m in movements] == ["disposal"]


def test_double_trigger_is_one_movement() -> None:
    events = [scan(item_scan(1), T0), scan(item_scan(1), T0 + 1), scan(item_scan(1), T0 + 30)]
    pipeline = Pipeline(PLAN)
    movements = run(pipeline, events)
    assert len(movements) == 2, "a rescan within 5 s is dropped, a later scan is a new movement"
    assert movements[0].id != movements[1].id
    assert pipeline.counters["rescans"] == 1
    assert any(n.event == "rescan_ignored" for n in pipeline.take_notices())


def test_garbage_scan_is_counted_and_noticed() -> None:
    pipeline = Pipeline(PLAN)
    assert run(pipeline, [scan("\x00\x01garbage", T0)]) == []
    assert pipeline.counters["bad_scans"] == 1
    assert [n.event for n in pipeline.take_notices()] == ["scan_rejected"]


def test_expected_returns_duplicate_and_completion() -> None:
    pipeline = Pipeline(PLAN)
    first, second = item_scan(1), item_scan(2)
    gtin1, serial1 = first[5:19], first[21:]
    gtin2, serial2 = second[5:19], second[21:]
    pipeline.apply_expected_returns(
        {
            "rma": "RMA-7",
            "items": [{"gtin": gtin1, "serial": serial1}, {"gtin": gtin2, "serial": serial2}],
        }
    )
    events = [
        scan(first, T0),
        scan(first, T0 + 10),  # the same item received again, outside the rescan window
        scan(item_scan(3), T0 + 11),
        scan(second, T0 + 12),
    ]
    movements = run(pipeline, events)
    assert [(m.type, m.rma, m.expected, m.flags) for m in movements] == [
        ("receipt", "RMA-7", True, ()),
        ("receipt", "RMA-7", True, ("duplicate",)),
        ("receipt", None, False, ()),
        ("receipt", "RMA-7", True, ()),
        ("rma-complete", "RMA-7", True, ()),
    ]


def _tags(epc: str, antennas: list[int], start_s: float, reads_each: int = 20) -> list[TagRead]:
    reads = []
    at = start_s
    for antenna in antennas:
        for _ in range(reads_each):
            reads.append(
                TagRead(
                    reader="portal",
                    station="door-3",
                    epc_hex=epc,
                    antenna=antenna,
                    at_s=at,
                    rssi_dbm=-50.0,
                )
            )
            at += 0.02
    return reads


SGTIN = "3074257BF7194E4000001A85"  # urn:epc:id:sgtin:0614141.812345.6789


def test_rfid_inward_passage_is_one_receipt_with_evidence() -> None:
    pipeline = Pipeline(PLAN)
    movements = run(pipeline, _tags(SGTIN, [1, 2, 3, 4], T0))
    assert len(movements) == 1
    receipt = movements[0]
    assert receipt.type == "receipt"
    assert receipt.direction == "in"
    assert receipt.item.epc == "urn:epc:id:sgtin:0614141.812345.6789"
    assert receipt.item.serial == "6789"
    assert receipt.evidence.reads == 80
    assert receipt.evidence.source == "rfid"
    assert set(receipt.evidence.antennas) == {1, 2, 3, 4}


def test_rfid_outward_and_in_and_out_make_nothing() -> None:
    pipeline = Pipeline(PLAN)
    out = run(pipeline, _tags(SGTIN, [4, 3, 2, 1], T0))
    in_and_out = run(pipeline, _tags("3074257BF7194E4000001A86", [1, 2, 3, 4, 3, 2, 1], T0 + 100))
    assert out == []
    assert in_and_out == []


def test_rfid_receipt_carries_the_open_rma() -> None:
    pipeline = Pipeline(PLAN)
    events: list[RawEvent] = [scan("RMA-000900", T0 - 1), *_tags(SGTIN, [1, 2, 3, 4], T0)]
    movements = run(pipeline, events)
    assert [m.rma for m in movements] == ["RMA-000900"]


def test_undecodable_epc_is_kept_as_raw_identity() -> None:
    pipeline = Pipeline(PLAN)
    movements = run(pipeline, _tags("E2801160600002086D5B0B84", [1, 2, 3, 4], T0))
    assert len(movements) == 1
    assert movements[0].item.epc is not None
    assert movements[0].item.epc.startswith("urn:epc:raw:")


def test_restart_between_rma_label_and_items_keeps_the_rma() -> None:
    pipeline = Pipeline(PLAN)
    run(pipeline, [scan("RMA-000123", T0)])
    snapshot = json.loads(json.dumps(pipeline.snapshot()))
    restarted = Pipeline(PLAN, snapshot)
    movements = run(restarted, [scan(item_scan(1), T0 + 30)])
    assert [m.rma for m in movements] == ["RMA-000123"]


station_names = st.sampled_from(["door-3", "bench-1", "restock-1", "recycle-1"])
codes = st.one_of(
    st.integers(0, 30).map(item_scan),
    st.sampled_from(
        ["RMA-1", "RMA-2", "RMA-CLOSE", "DISP-REPAIR", "DISP-RESTOCK", "LOC-A-1", "junk"]
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(codes, station_names, st.floats(0.1, 20)), min_size=1, max_size=40),
    st.integers(0, 40),
)
def test_snapshot_restore_anywhere_gives_the_same_movements(
    steps: list[tuple[str, str, float]], split: int
) -> None:
    events: list[RawEvent] = []
    at = T0
    for data, station, gap_s in steps:
        at += gap_s
        events.append(scan(data, at, station))
    straight = run(Pipeline(PLAN), events)
    first = Pipeline(PLAN)
    head = run(
        first, events[:split], end_s=events[min(split, len(events)) - 1].at_s if split else T0
    )
    resumed = Pipeline(PLAN, json.loads(json.dumps(first.snapshot())))
    tail = run(resumed, events[split:])
    assert [m.id for m in head + tail] == [m.id for m in straight]


def test_smoothing_settings_come_from_the_station() -> None:
    plan = PipelinePlan(
        gateway="g",
        stations={
            "door-3": StationPlan(
                id="door-3", kind="receiving", smoothing=SmoothingSettings(rssi_floor_dbm=-40.0)
            )
        },
        zones={"portal": {"outside": [1, 2], "inside": [3, 4]}},
        gs1=BIIP_GS1,
    )
    assert run(Pipeline(plan), _tags(SGTIN, [1, 2, 3, 4], T0)) == [], "all reads below the floor"


def test_rfid_visit_stays_open_until_its_reads_are_heard() -> None:
    """A frozen daemon: the clocks ran on 6 s, but the inside reads still wait in the socket."""
    pipeline = Pipeline(PLAN)
    outside = _tags(SGTIN, [1, 2], T0)  # 0.8 s of reads, last at T0 + 0.78
    inside = _tags(SGTIN, [3, 4], T0 + 0.8)
    for read in outside:
        assert pipeline.feed(read, read.at_s) == []
    # Woken 6 s later: everything up to T0 + 0.79 was heard, the rest is still on its way.
    woke_s = T0 + 6.8
    assert pipeline.tick(woke_s, woke_s, heard_mono_s=T0 + 0.79) == []
    for read in inside:
        assert pipeline.feed(read, woke_s) == []
    # The backlog is read and the socket found empty: the whole passage is judged at once.
    movements = pipeline.tick(woke_s + 0.1, woke_s + 0.1, heard_mono_s=woke_s)
    assert [(m.type, m.direction, m.evidence.reads) for m in movements] == [("receipt", "in", 80)]


def test_rfid_visit_split_by_the_clock_without_heard_time() -> None:
    """The same freeze without heard time: the visit is judged on its outside reads alone."""
    pipeline = Pipeline(PLAN)
    for read in _tags(SGTIN, [1, 2], T0):
        pipeline.feed(read, read.at_s)
    woke_s = T0 + 6.8
    early = pipeline.tick(woke_s, woke_s)
    for read in _tags(SGTIN, [3, 4], T0 + 0.8):
        pipeline.feed(read, woke_s)
    late = pipeline.tick(woke_s + 10, woke_s + 10)
    assert [m for m in early + late if m.type == "receipt" and m.evidence.reads == 80] == []


def _tick_after_reads(
    reader_ahead_s: float, gateway_after_s: float, heard_after_s: float
) -> list[Movement]:
    """An inward passage read by a reader whose clock runs `reader_ahead_s` ahead of ours,
    ticked `gateway_after_s` after its last read with input heard `heard_after_s` after it."""
    pipeline = Pipeline(PLAN)
    reads = _tags(SGTIN, [1, 2, 3, 4], T0 + reader_ahead_s)
    for read in reads:
        pipeline.feed(read, read.at_s - reader_ahead_s)
    last_wall_s = reads[-1].at_s - reader_ahead_s
    mono_s = wall_s = last_wall_s + gateway_after_s
    return pipeline.tick(mono_s, wall_s, last_wall_s + heard_after_s)


def test_visits_close_on_time_heard_whatever_the_reader_clock() -> None:
    # Heard up to now: the visit ends, with the reader's clock ours or 90 s ahead of it.
    assert len(_tick_after_reads(0.0, 10.0, 10.0)) == 1
    assert len(_tick_after_reads(90.0, 10.0, 10.0)) == 1
    # Not heard since the last read (a frozen or starved gateway): the visit stays open.
    assert _tick_after_reads(0.0, 10.0, 0.0) == []
    assert _tick_after_reads(90.0, 10.0, 0.0) == []
