"""KPIs from a scripted day equal the values computed by hand; snapshots survive restarts."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.kpi import CostFactors, Factors, KpiState, nearest_rank
from gateway.domain.movements import Evidence, Item, Movement, MovementType, movement_id
from gateway.errors import ConfigError, InputError

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z
HOUR = 3600.0

FACTORS = CostFactors.from_config(
    {
        "RESTOCK": {"handling_cost": 2.0, "co2e_avoided_kg": 1.5, "recycled_kg": 0},
        "DISP-REPAIR": {"handling_cost": 8.0, "co2e_avoided_kg": 4.0},
        "recycle": {"handling_cost": 1.0, "co2e_avoided_kg": 0.5, "recycled_kg": 2.0},
        "DISPOSE": {"handling_cost": 3.0},
        "DONATE": {"handling_cost": 0.5, "co2e_avoided_kg": 2.5},
    },
    {
        "80614141": {"RECYCLE": {"recycled_kg": 3.0}},
        "8061414100004": {"REPAIR": {"handling_cost": 10.0}},
    },
)


def _movement(
    kind: MovementType,
    key: str,
    at_s: float,
    *,
    gtin: str | None = None,
    disposition: str | None = None,
    expected: bool | None = None,
    flags: tuple[str, ...] = (),
) -> Movement:
    item = Item(gtin=gtin or "40123450009999", serial=key)
    return Movement(
        id=movement_id("dock-3", item.key, f"st-{kind}", kind, at_s),
        type=kind,
        occurred_at_s=at_s,
        station=f"st-{kind}",
        item=item,
        evidence=Evidence(source="barcode", reader="r", first_seen_s=at_s, last_seen_s=at_s),
        expected=expected,
        disposition=disposition,
        flags=flags,
    )


# item, GTIN, expected, disposition, restock delay after receipt (None: goes to disposal)
DAY_ITEMS: list[tuple[str, str, bool, str | None, float | None]] = [
    ("A", "80614141000011", True, "DISP-RESTOCK", 1 * HOUR),
    ("B", "80614141000028", True, "DISP-RESTOCK", 2 * HOUR),
    ("C", "80614141000035", True, "DISP-RESTOCK", 3 * HOUR),
    ("D", "80614141000042", True, "DISP-REPAIR", 5 * HOUR),
    ("E", "80614141000059", True, "DISP-RECYCLE", None),
    ("F", "40123450000016", True, "DISP-DISPOSE", None),
    ("G", "40123450000023", False, "DISP-DONATE", None),
    ("H", "40123450000030", False, "DISP-RESTOCK", 4 * HOUR),
    ("I", "40123450000047", False, "DISP-RECYCLE", None),
]


def _scripted_day() -> list[Movement]:
    movements: list[Movement] = []
    for index, (key, gtin, expected, disposition, delay_s) in enumerate(DAY_ITEMS):
        received_s = T0 + index * 600
        movements.append(_movement("receipt", key, received_s, gtin=gtin, expected=expected))
        movements.append(
            _movement("inspection", key, received_s + 900, gtin=gtin, disposition=disposition)
        )
        if delay_s is None:
            movements.append(_movement("disposal", key, received_s + HOUR, gtin=gtin))
        else:
            movements.append(_movement("restock", key, received_s + delay_s, gtin=gtin))
    movements += [
        # A received twice for its RMA: flagged by the matcher, not a new return.
        _movement(
            "receipt", "A", T0 + 60, gtin="80614141000011", expected=True, flags=("duplicate",)
        ),
        _movement("rma-complete", "RMA-000123", T0 + 3000),
        # J: inspected without a disposition scanned first.
        _movement("inspection", "J", T0 + 2 * HOUR),
        # K: received yesterday, before this state began; restocked today.
        _movement("restock", "K", T0 + 3 * HOUR),
        _movement("gap", "gap", T0 + 6 * HOUR),
    ]
    return sorted(movements, key=lambda m: m.occurred_at_s)


LATENCIES_S = [0.1 * k for k in range(1, 11)]  # 0.1 .. 1.0

EXPECTED: dict[str, Any] = {
    "at": "2026-11-19T11:06:40.000Z",  # T0 + 24 h
    # receipts A..I (the duplicate of A is apart); inspections A..I + J; restocks A B C D H K;
    # disposals E F G I; one rma-complete; one gap.
    "counts": {
        "receipt": 9,
        "inspection": 10,
        "restock": 6,
        "disposal": 4,
        "rma-complete": 1,
        "gap": 1,
    },
    "duplicates": 1,
    # RESTOCK: A B C H; REPAIR: D; RECYCLE: E I; DISPOSE: F; DONATE: G; UNSET: J
    "dispositions": {
        "RESTOCK": 4,
        "REPAIR": 1,
        "RECYCLE": 2,
        "DISPOSE": 1,
        "DONATE": 1,
        "UNSET": 1,
    },
    "received": 9,
    # restocked A B C H (4) + repaired D (1; its later restock is the same return) = 5
    "recovered": 5,
    "recovered_unmatched": 1,  # K
    "recovery_rate": 0.555556,  # 5 / 9
    # durations sorted: 1 h, 2 h, 3 h, 4 h, 5 h (A B C H D); n = 5
    # median: rank ceil(50*5/100) = 3 -> 3 h = 10800 s; p90: rank ceil(90*5/100) = 5 -> 18000 s
    "receipt_to_restock_s": {"median": 10800.0, "p90": 18000.0, "n": 5},
    "unexpected_share": 0.333333,  # G H I: 3 / 9
    "open_rmas": 2,
    "awaiting_restock": 4,  # E F G I: received, never restocked
    "pending_evicted": 0,
    # 0.1 .. 1.0: p50 rank 5 -> 0.5; p90 rank 9 -> 0.9; p99 rank ceil(9.9) = 10 -> 1.0
    "read_to_publish_latency_s": {"p50": 0.5, "p90": 0.9, "p99": 1.0, "n": 10, "total": 10},
    "oldest_unacked_age_s": 12.5,
    # handling: RESTOCK 4 x 2.0 = 8.0; REPAIR D 10.0 (prefix 8061414100004); RECYCLE E 1.0 + I 1.0;
    # DISPOSE 3.0; DONATE 0.5 -> 23.5 over 9 costed inspections (J has none) = 2.611111
    "handling_cost_avg": 2.611111,
    # co2e: 4 x 1.5 = 6.0; REPAIR 4.0 (override keeps the base); RECYCLE 2 x 0.5 = 1.0;
    # DISPOSE 0; DONATE 2.5 -> 13.5
    "co2e_avoided_kg": 13.5,
    # recycled: E 3.0 (prefix 80614141 override) + I 2.0 (base) = 5.0
    "recycled_kg": 5.0,
}


def _kpis(state: KpiState) -> dict[str, object]:
    return state.snapshot_kpis(T0 + 24 * HOUR, open_rmas=2, oldest_unacked_age_s=12.5)


def test_scripted_day_matches_hand_computed_values() -> None:
    state = KpiState(FACTORS)
    for movement in _scripted_day():
        state.add(movement, movement.occurred_at_s)
    for latency_s in LATENCIES_S:
        state.record_latency(latency_s)
    assert _kpis(state) == EXPECTED


def test_restore_mid_day_then_continue_gives_the_same_kpis() -> None:
    day = _scripted_day()
    half = len(day) // 2
    first = KpiState(FACTORS)
    for movement in day[:half]:
        first.add(movement, movement.occurred_at_s)
    for latency_s in LATENCIES_S[:4]:
        first.record_latency(latency_s)
    saved = json.loads(json.dumps(first.snapshot()))
    second = KpiState.restore(saved, FACTORS)
    # The lead may re-feed movements written just before the snapshot: they count once.
    for movement in day[half - 3 :]:
        second.add(movement, movement.occurred_at_s)
    for latency_s in LATENCIES_S[4:]:
        second.record_latency(latency_s)
    assert _kpis(second) == EXPECTED
    assert second.snapshot()["repeats"] == 3


def test_without_factors_the_money_and_weights_are_none() -> None:
    state = KpiState()
    for movement in _scripted_day():
        state.add(movement, movement.occurred_at_s)
    kpis = state.snapshot_kpis(T0)
    assert kpis["handling_cost_avg"] is None
    assert kpis["co2e_avoided_kg"] is None
    assert kpis["recycled_kg"] is None
    assert kpis["recovery_rate"] == EXPECTED["recovery_rate"]


def test_empty_state_reports_none_not_zero() -> None:
    kpis = KpiState(FACTORS).snapshot_kpis(T0)
    assert kpis["recovery_rate"] is None
    assert kpis["unexpected_share"] is None
    assert kpis["receipt_to_restock_s"] == {"median": None, "p90": None, "n": 0}
    assert kpis["handling_cost_avg"] is None
    assert kpis["co2e_avoided_kg"] == 0.0
    assert kpis["read_to_publish_latency_s"] == {
        "p50": None,
        "p90": None,
        "p99": None,
        "n": 0,
        "total": 0,
    }


def test_pending_receipts_are_bounded_by_count_and_age() -> None:
    capped = KpiState(max_pending=2)
    for index, key in enumerate("ABC"):
        capped.add(_movement("receipt", key, T0 + index), T0 + index)
    capped.add(_movement("restock", "A", T0 + HOUR), T0 + HOUR)
    kpis = capped.snapshot_kpis(T0 + HOUR)
    assert kpis["pending_evicted"] == 1
    assert kpis["awaiting_restock"] == 2
    assert kpis["recovered"] == 0
    assert kpis["recovered_unmatched"] == 1
    aged = KpiState(max_pending_age_s=2 * HOUR)
    aged.add(_movement("receipt", "A", T0), T0)
    aged.add(_movement("receipt", "B", T0 + HOUR), T0 + HOUR)
    aged.add(_movement("restock", "B", T0 + 2.5 * HOUR), T0 + 2.5 * HOUR)
    kpis = aged.snapshot_kpis(T0 + 2.5 * HOUR)
    assert kpis["pending_evicted"] == 1  # A, 2.5 h old
    assert kpis["receipt_to_restock_s"] == {"median": 5400.0, "p90": 5400.0, "n": 1}


def test_latency_window_is_bounded() -> None:
    state = KpiState(max_latency_samples=4)
    for latency_s in [9.0, 9.0, 1.0, 2.0, 3.0, -0.5, float("nan")]:
        state.record_latency(latency_s)
    assert state.snapshot_kpis(T0)["read_to_publish_latency_s"] == {
        "p50": 1.0,  # window [1, 2, 3, 0]: sorted [0, 1, 2, 3], rank 2
        "p90": 3.0,
        "p99": 3.0,
        "n": 4,
        "total": 6,
    }


@pytest.mark.parametrize(
    ("values", "percentile", "expected"),
    [
        ([], 50, None),
        ([7.0], 50, 7.0),
        ([1.0, 2.0], 50, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 50, 3.0),
        ([float(k) for k in range(1, 11)], 90, 9.0),
        ([float(k) for k in range(1, 11)], 91, 10.0),
        ([float(k) for k in range(1, 101)], 99, 99.0),
    ],
)
def test_nearest_rank(values: list[float], percentile: int, expected: float | None) -> None:
    assert nearest_rank(values, percentile) == expected


def test_cost_factors_from_config() -> None:
    assert FACTORS.factors("RECYCLE", "80614141000059") == Factors(1.0, 0.5, 3.0)
    assert FACTORS.factors("RECYCLE", "40123450000047") == Factors(1.0, 0.5, 2.0)
    assert FACTORS.factors("REPAIR", "80614141000042") == Factors(10.0, 4.0, 0.0)
    assert FACTORS.factors("REPAIR", "80614141000011") == Factors(8.0, 4.0, 0.0)
    assert FACTORS.factors("UNSET", None) is None
    with pytest.raises(ConfigError) as unknown:
        CostFactors.from_config({"RESTOCK": {"handling_cost_eur": 1.0}})
    assert unknown.value.key == "kpi.factors.RESTOCK.handling_cost_eur"
    with pytest.raises(ConfigError) as negative:
        CostFactors.from_config({"RECYCLE": {"recycled_kg": -1.0}})
    assert negative.value.key == "kpi.factors.RECYCLE.recycled_kg"
    with pytest.raises(ConfigError) as prefix:
        CostFactors.from_config({}, {"80A": {"RESTOCK": {}}})
    assert prefix.value.key == "kpi.gtin_prefixes.80A"


def test_malformed_snapshot_is_refused() -> None:
    good = KpiState(FACTORS).snapshot()
    for broken in (
        {**good, "version": 99},
        {**good, "received": -1},
        {**good, "pending": [["A", "noon", False]]},
        {**good, "durations": ["x"]},
        {**good, "counts": {"receipt": 1.5}},
    ):
        with pytest.raises(InputError):
            KpiState.restore(broken, FACTORS)


_KINDS: list[MovementType] = ["receipt", "inspection", "restock", "disposal", "rma-complete", "gap"]
_STEP = st.tuples(
    st.sampled_from(_KINDS),
    st.sampled_from("ABCDE"),
    st.sampled_from([None, "DISP-RESTOCK", "DISP-REPAIR", "DISP-RECYCLE", "junk"]),
    st.sampled_from([None, True, False]),
    st.booleans(),
    st.floats(min_value=0, max_value=7200),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_STEP, max_size=40), split=st.integers(min_value=0, max_value=40))
def test_properties(
    steps: list[tuple[MovementType, str, str | None, bool | None, bool, float]], split: int
) -> None:
    state = KpiState(FACTORS, max_pending=3)
    first = KpiState(FACTORS, max_pending=3)
    at_s = T0
    added: Counter[str] = Counter()
    duplicates = 0
    movements: list[Movement] = []
    for index, (kind, key, disposition, expected, duplicate, dt_s) in enumerate(steps):
        at_s += dt_s + index * 1e-3  # distinct times give distinct ids
        flags = ("duplicate",) if duplicate and kind == "receipt" else ()
        movement = _movement(
            kind, key, at_s, disposition=disposition, expected=expected, flags=flags
        )
        movements.append(movement)
        state.add(movement, at_s)
        if flags:
            duplicates += 1
        else:
            added[kind] += 1
    kpis = state.snapshot_kpis(at_s)
    rate = kpis["recovery_rate"]
    assert rate is None or 0.0 <= rate <= 1.0  # type: ignore[operator]
    assert kpis["counts"] == {kind: added[kind] for kind in _KINDS}
    assert kpis["duplicates"] == duplicates
    assert kpis["received"] == added["receipt"]
    share = kpis["unexpected_share"]
    assert share is None or 0.0 <= share <= 1.0  # type: ignore[operator]
    assert kpis["awaiting_restock"] <= 3  # type: ignore[operator]
    # A restart at any point changes nothing.
    for movement in movements[:split]:
        first.add(movement, movement.occurred_at_s)
    resumed = KpiState.restore(json.loads(json.dumps(first.snapshot())), FACTORS, max_pending=3)
    for movement in movements[split:]:
        resumed.add(movement, movement.occurred_at_s)
    assert resumed.snapshot_kpis(at_s) == kpis
