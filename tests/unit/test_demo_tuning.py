"""The demo gives the tuning page something to say: strays parked on one antenna, pallets in."""

from __future__ import annotations

from gateway.console.tags import TagsInView
from gateway.console.tuning import reader_tuning
from gateway.demo.run import PARKED_AFTER_S, STRAY_ANTENNA, STRAYS, demo_scenario
from gateway.domain.events import TagRead
from gateway.profiles import find_profile

READER = "door-3-portal"


def test_strays_sit_weakly_before_one_inside_antenna_for_the_whole_run() -> None:
    scenario = demo_scenario(120.0)
    strays = [t for t in scenario.tags if t.role == "stray"]
    pallets = [t for t in scenario.tags if t.role == "pallet"]
    assert len(strays) == STRAYS
    for tag in strays:
        (parked,) = tag.passes
        assert parked.antennas == (STRAY_ANTENNA,)
        assert STRAY_ANTENNA in scenario.zones["inside"]
        assert (parked.start_s, parked.end_s) == (0.0, scenario.duration_s)
        assert parked.rssi_dbm < min(p.rssi_dbm for t in pallets for p in t.passes)
    # Pallets cross outside -> inside.
    for tag in pallets:
        outside, inside = tag.passes
        assert outside.antennas == scenario.zones["outside"]
        assert inside.antennas == scenario.zones["inside"]
        assert outside.start_s < inside.start_s


def test_tuning_page_lists_the_strays_as_parked_and_suggests_within_two_minutes() -> None:
    scenario = demo_scenario(180.0)
    table = TagsInView()
    end_s = PARKED_AFTER_S + 15.0  # well within the demo's first two minutes
    step_s = 0.5  # the console feed's tick
    t = 0.0
    while t < end_s:
        for tag in scenario.tags:
            for p in tag.passes:
                for antenna in p.antennas:
                    read = TagRead(READER, "door-3", tag.epc_hex, antenna, t, p.rssi_dbm)
                    for _ in range(p.reads_between(t, t + step_s)):
                        table.observe(read)
        t += step_s
        table.tick(t)
        table.record_history(t)
    page = reader_tuning(
        READER,
        table.history,
        table.all(),
        [],
        find_profile("generic-llrp-portal"),
        now_s=end_s,
        parked_after_s=PARKED_AFTER_S,
    )
    stray_epcs = {tag.epc_hex for tag in scenario.tags if tag.role == "stray"}
    assert {row["epc"] for row in page["parked"]} == stray_epcs
    assert all(list(row["antennas"]) == [str(STRAY_ANTENNA)] for row in page["parked"])
    (suggestion,) = page["suggestions"]
    assert suggestion["id"] == f"parked-{STRAY_ANTENNA}"
    assert suggestion["options"], "a profile the technician can apply with a click"
    assert set(page["antennas"]) == {"1", "2", "3", "4"}
