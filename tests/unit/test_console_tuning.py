"""The tuning page's parts: bounded per-antenna history, crossing and parked tags, suggestions."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.console.tags import TagsInView
from gateway.console.trial import PhaseResult, compare
from gateway.console.tuning import (
    BUCKET_S,
    HISTORY_BUCKETS,
    AntennaHistory,
    crossed_items,
    reader_tuning,
    split_tags,
    suggest,
)
from gateway.domain.events import TagRead
from gateway.profiles import find_profile, parse_profile

T0 = 1_800_000_000.0  # a wall-clock second, as LLRP reports carry
PORTAL = "door-3-portal"


def _epc(serial: int) -> str:
    return f"3034257BF7194E40{serial:08X}"


def _uri(serial: int) -> str:
    return f"urn:epc:id:sgtin:0614141.812345.{serial}"


def test_history_keeps_thirty_minutes_of_ten_second_buckets_whatever_the_hours() -> None:
    history = AntennaHistory()
    for second in range(3600):  # an hour, 20 reads a second on antenna 1 at -60 dBm
        history.add((PORTAL, 1), T0 + second, 20, -60.0, 1)
        if second % 2:
            history.add((PORTAL, 2), T0 + second, 1, -70.0 + (second % 10), 1)
    series = history.series(PORTAL, now_s=T0 + 3599.0)
    assert sorted(series) == [1, 2]
    one = series[1]
    assert len(one["t"]) == HISTORY_BUCKETS
    assert one["t"][0] >= T0 + 3600 - HISTORY_BUCKETS * BUCKET_S - BUCKET_S
    assert set(one["reads_per_s"]) == {20.0}
    assert set(one["rssi_dbm"]) == {-60.0}
    assert set(series[2]["reads_per_s"]) == {0.5}
    # The rings are fixed in size: nothing grows with the hours.
    ring = history._series[(PORTAL, 1)]  # the bound is the point of the test
    assert len(ring.reads) == HISTORY_BUCKETS
    # A read from before the ring's span does not overwrite a newer bucket.
    history.add((PORTAL, 1), T0, 1000, -20.0, 1)
    assert history.series(PORTAL, now_s=T0 + 3599.0)[1]["reads_per_s"] == one["reads_per_s"]
    # A shorter window, and the reads of the last ten minutes per port.
    assert len(history.series(PORTAL, now_s=T0 + 3599.0, window_s=600.0)[1]["t"]) == 60
    # A window shorter than a bucket still has the bucket it ends in (a short trial phase).
    assert history.series(PORTAL, now_s=T0 + 3599.0, window_s=4.0)[1]["rssi_dbm"] == [-60.0]
    assert history.reads_since(PORTAL, T0 + 3000.0, T0 + 3599.0)[1] == 20 * 600


def test_tags_in_view_feed_the_history_and_the_peak_per_antenna() -> None:
    table = TagsInView()
    table.observe(TagRead(PORTAL, "door-3", _epc(1), 3, T0, rssi_dbm=-71.0))
    table.record_history(T0 + 0.5)
    table.observe(TagRead(PORTAL, "door-3", _epc(1), 3, T0 + 5, rssi_dbm=-69.5, read_count=4))
    table.observe(TagRead(PORTAL, "door-3", _epc(1), 1, T0 + 9, rssi_dbm=-55.0))
    table.record_history(T0 + 9.5)
    table.record_history(T0 + 10.0)  # nothing new: nothing added
    (tag,) = table.all()
    assert tag.first_seen_s == T0
    assert tag.last_seen_s == T0 + 9
    assert tag.peak_by_antenna == {(PORTAL, 3): -69.5, (PORTAL, 1): -55.0}
    series = table.history.series(PORTAL, now_s=T0 + 10)
    assert series[3]["t"] == [T0]
    assert series[3]["reads_per_s"] == [0.5]
    assert series[3]["rssi_dbm"] == [-70.2]  # mean of the two reports' RSSI
    assert series[1]["reads_per_s"] == [0.1]


def _table(parked: int, crossing: int, *, parked_rssi: float = -71.0) -> TagsInView:
    """`parked` tags on antenna 3 for ten minutes, `crossing` tags passing 1 then 3 lately."""
    table = TagsInView(expire_s=3600.0)
    for second in range(0, 601, 30):
        for serial in range(parked):
            table.observe(
                TagRead(PORTAL, "door-3", _epc(serial), 3, T0 + second, rssi_dbm=parked_rssi)
            )
        table.record_history(T0 + second)
    for serial in range(100, 100 + crossing):
        table.observe(TagRead(PORTAL, "door-3", _epc(serial), 1, T0 + 590, rssi_dbm=-50.0))
        table.observe(TagRead(PORTAL, "door-3", _epc(serial), 3, T0 + 592, rssi_dbm=-52.0))
    table.observe(TagRead(PORTAL, "door-3", _epc(999), 2, T0 + 595, rssi_dbm=-65.0))
    table.record_history(T0 + 595)
    return table


def _activity(crossing: int) -> list[dict[str, Any]]:
    visits = [
        {"item": _uri(serial), "direction": "in", "station": "door-3", "at_s": T0 + 593}
        for serial in range(100, 100 + crossing)
    ]
    # A stray without a direction does not make a tag crossing.
    return [*visits, {"item": _uri(0), "direction": None, "reason": "stray: one zone"}]


def test_tags_split_into_crossing_parked_and_passing() -> None:
    table = _table(parked=12, crossing=4)
    assert crossed_items(_activity(4)) == {_uri(s) for s in range(100, 104)}
    split = split_tags(PORTAL, table.all(), crossed_items(_activity(4)), parked_after_s=120.0)
    assert [t.uri for t in split.crossing] == [_uri(s) for s in range(100, 104)]
    assert len(split.parked) == 12
    assert split.parked[0].peak_by_antenna == {3: -71.0}
    assert split.parked[0].in_view_s == 600.0
    assert [t.epc_hex for t in split.passing] == [_epc(999)]
    assert split.crossing[0].peak_by_antenna == {1: -50.0, 3: -52.0}
    # Another reader sees none of them.
    assert split_tags("bench", table.all(), set()).parked == []


def test_parked_tags_suggest_less_power_or_a_floor_with_evidence_never_applied() -> None:
    profile = find_profile("impinj-r700-portal")  # antenna 3 at 28.5 dBm, floor -72 dBm
    table = _table(parked=12, crossing=4)
    split = split_tags(PORTAL, table.all(), crossed_items(_activity(4)))
    (found,) = suggest(PORTAL, split, profile, {1: 500, 2: 40, 3: 900, 4: 10})
    assert found.text == (
        "antenna 3 reads 12 parked tags at -71 dBm: lower its power by 3 dB or set an RSSI "
        "floor of -68 dBm"
    )
    assert found.antenna == 3
    assert any("12 tags in view of antenna 3" in e for e in found.evidence)
    assert any("4 crossing tags peak at -50.0 dBm on their strongest" in e for e in found.evidence)
    power, floor = found.options
    lowered = parse_profile(power["profile"])
    assert [a.power_dbm for a in lowered.antennas] == [30.0, 30.0, 25.5, 28.5]
    assert lowered.version == profile.version + 1
    assert lowered.name == profile.name
    assert parse_profile(floor["profile"]).reader.rssi_floor_dbm == -68.0
    # Too few parked tags: nothing to say.
    few = split_tags(PORTAL, _table(parked=2, crossing=4).all(), crossed_items(_activity(4)))
    assert suggest(PORTAL, few, profile, {1: 500, 2: 50, 3: 500, 4: 20}) == []


def test_a_floor_that_would_lose_crossing_tags_says_so() -> None:
    profile = find_profile("impinj-r700-portal")
    table = _table(parked=5, crossing=3, parked_rssi=-49.0)
    split = split_tags(PORTAL, table.all(), crossed_items(_activity(3)))
    (found,) = suggest(PORTAL, split, profile, {})
    assert "set an RSSI floor of -46 dBm" in found.text
    assert any("would lose 3 of them" in e for e in found.evidence)


def test_a_silent_antenna_is_suggested_for_a_check_and_power_at_minimum_offers_no_step() -> None:
    profile = find_profile("impinj-r700-portal")
    (found,) = suggest(PORTAL, split_tags(PORTAL, [], set()), profile, {1: 400, 2: 380, 3: 350})
    assert found.key == "silent-4"
    assert "antenna 4 read nothing in 10 min while the others read 1130" in found.text
    (option,) = found.options
    assert [a.enabled for a in parse_profile(option["profile"]).antennas] == [
        True,
        True,
        True,
        False,
    ]
    data = profile.model_dump(mode="json")
    data["antennas"][2]["power_dbm"] = 10.0  # the R700's minimum: no lower step to offer
    at_minimum = parse_profile(data)
    table = _table(parked=6, crossing=0)
    split = split_tags(PORTAL, table.all(), set())
    (parked,) = suggest(PORTAL, split, at_minimum, {})
    assert [o["label"] for o in parked.options] == ["RSSI floor (all antennas): -72.0 → -68 dBm"]


def test_reader_tuning_is_the_pages_json() -> None:
    table = _table(parked=12, crossing=4)
    page = reader_tuning(
        PORTAL,
        table.history,
        table.all(),
        _activity(4),
        find_profile("impinj-r700-portal"),
        now_s=T0 + 600,
    )
    assert page["profile"] == "impinj-r700-portal v1"
    assert sorted(page["antennas"]) == ["1", "2", "3"]
    assert len(page["parked"]) == 12
    assert len(page["crossing"]) == 4
    assert page["passing"] == 1
    assert [s["id"] for s in page["suggestions"]] == ["parked-3", "silent-4"]


def _phase(label: str, crossings: int, parked_reads: int, minutes: float = 5.0) -> PhaseResult:
    return PhaseResult(
        profile=label,
        name="portal-a v1" if label == "A" else "portal-b v1",
        started_s=T0,
        ended_s=T0 + minutes * 60,
        reads_per_s={"1": 40.0, "3": 20.0},
        rssi_dbm={"1": -55.0, "3": -70.0},
        crossings=crossings,
        confidence=0.9,
        parked_reads=parked_reads,
        parked_tags=4,
    )


@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        ((60, 3000), (75, 3000), "B (portal-b v1) did better"),
        ((75, 3000), (60, 2000), "a trade-off"),
        ((60, 3000), (61, 1200), "B (portal-b v1) did as well on crossings with fewer parked"),
        ((60, 1200), (61, 3000), "A (portal-a v1) did as well on crossings with fewer parked"),
        ((60, 3000), (61, 3050), "no clear difference"),
        ((80, 1000), (60, 3000), "A (portal-a v1) did better"),
    ],
)
def test_trial_comparison_states_a_verdict_with_its_figures(
    a: tuple[int, int], b: tuple[int, int], verdict: str
) -> None:
    # Two rounds each, interleaved as the trial runs them.
    phases = [_phase("A", *a), _phase("B", *b), _phase("A", *a), _phase("B", *b)]
    found = compare(phases, "portal-a v1", "portal-b v1")
    assert found["verdict"].startswith(verdict)
    assert found["A"]["crossings_per_min"] == a[0] / 5
    assert found["B"]["parked_reads_per_s"] == round(b[1] / 300, 2)
    assert found["evidence"][0].startswith(f"crossings per minute: A {a[0] / 5:.1f}, B")


def test_trial_comparison_waits_for_both_profiles() -> None:
    found = compare([_phase("A", 10, 10)], "a", "b")
    assert found["verdict"].startswith("not yet")
    assert found["B"] is None
