"""Visit tracking: a modelled portal (pallets, parked strays, in-and-out), restarts, bounds."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.events import TagRead
from gateway.domain.smoothing import SmoothingSettings, Visit, VisitTracker, ZoneMap
from gateway.errors import ConfigError, InputError

T0 = 1_795_000_000.0
STATION = "door-3"
ZONES = {"portal": ZoneMap.from_config({"outside": [1, 2], "inside": [3, 4]})}
SETTINGS = SmoothingSettings()

# -- a portal model ----------------------------------------------------------------------------
# The door plane is x = 0; the outside antennas hang at x = -0.8 m facing the dock, the inside
# ones at x = +0.8 m facing the warehouse. Free-space loss from 0.3 m, up to 18 dB less behind an
# antenna, per-tag loss (orientation, what the tag is stuck on), 2.5 dB of fading noise; a reader
# sensitivity of -72 dBm and 70 % of attempts answered when above it.
ANTENNA_X = {1: -0.8, 2: -0.8, 3: 0.8, 4: 0.8}
FACING = {1: -1.0, 2: -1.0, 3: 1.0, 4: 1.0}
Path = Callable[[float], float]


def level_dbm(x: float, antenna: int, loss_db: float) -> float:
    ax = ANTENNA_X[antenna]
    lateral = 0.4 if antenna in (2, 4) else 0.2
    distance = max(0.3, math.hypot(x - ax, lateral))
    behind = max(0.0, min(1.0, -FACING[antenna] * (x - ax) / 0.6))
    return -38.0 - 20.0 * math.log10(distance / 0.3) - loss_db - 18.0 * behind


def tag_reads(
    epc: str,
    path: Path,
    start_s: float,
    end_s: float,
    rng: random.Random,
    *,
    loss_db: float = 0.0,
    step_s: float = 0.01,
    fades: Iterable[tuple[float, float]] = (),
    inside_mute: Iterable[tuple[float, float]] = (),
) -> list[TagRead]:
    """Reads of one tag following `path` (x in metres at time t) while the reader cycles ports.

    No reads during `fades`; none on the inside antennas during `inside_mute` (a session 1/2 tag
    inventoried by an outside antenna keeps quiet until its flag decays).
    """
    blackouts = list(fades)
    mutes = list(inside_mute)
    out: list[TagRead] = []
    steps = int((end_s - start_s) / step_s)
    for k in range(steps):
        t = start_s + k * step_s
        if any(a <= t < b for a, b in blackouts):
            continue
        antenna = 1 + k % 4
        if antenna > 2 and any(a <= t < b for a, b in mutes):
            continue
        level = level_dbm(path(t), antenna, loss_db) + rng.gauss(0.0, 2.5)
        if level >= -72.0 and rng.random() < 0.7:
            out.append(
                TagRead(
                    reader="portal",
                    station=STATION,
                    epc_hex=epc,
                    antenna=antenna,
                    at_s=T0 + t,
                    rssi_dbm=round(level, 1),
                )
            )
    return out


def crossing(start_s: float, offset_m: float, speed_m_s: float = 1.2) -> Path:
    return lambda t: -4.0 + offset_m + (t - start_s) * speed_m_s


def there_and_back(start_s: float, turn_x: float, speed_m_s: float = 1.2) -> Path:
    turn_s = (turn_x + 4.0) / speed_m_s

    def path(t: float) -> float:
        dt = t - start_s
        return -4.0 + speed_m_s * (dt if dt < turn_s else 2 * turn_s - dt)

    return path


def parked(x: float) -> Path:
    return lambda _t: x


def epc(n: int) -> str:
    return f"3074257BF7194E40{n:08X}"


def run(
    reads: Iterable[TagRead],
    tracker: VisitTracker | None = None,
    tick_s: float = 0.5,
    end: bool = True,
) -> list[Visit]:
    """Feed reads in time order, expiring every `tick_s` of event time, like the pipeline."""
    tracker = tracker or VisitTracker(STATION, SETTINGS, ZONES)
    visits: list[Visit] = []
    next_tick = None
    last = T0
    for read in sorted(reads, key=lambda r: r.at_s):
        tracker.observe(read)
        last = read.at_s
        if next_tick is None or last >= next_tick:
            visits += tracker.expire(last)
            next_tick = last + tick_s
    if end:
        visits += tracker.expire(last + 3600.0)
    return visits


def stray_reads(rng: random.Random, count: int, duration_s: float) -> list[TagRead]:
    reads: list[TagRead] = []
    for n in range(count):
        fades = []
        t = rng.uniform(0, 20)
        while t < duration_s:
            length = rng.uniform(1.0, 8.0)
            fades.append((t, t + length))
            t += length + rng.uniform(5.0, 40.0)
        reads += tag_reads(
            epc(10_000 + n),
            parked(rng.uniform(1.0, 3.0)),
            0.0,
            duration_s,
            rng,
            loss_db=rng.uniform(0.0, 8.0),
            step_s=0.1,
            fades=fades,
            inside_mute=[(end, end + 1.5) for _, end in fades],
        )
    return reads


# -- the portal --------------------------------------------------------------------------------


def test_pallet_of_25_crossing_inward_beside_parked_strays() -> None:
    rng = random.Random(3)
    pallet: list[TagRead] = []
    for n in range(25):
        offset = rng.uniform(-0.6, 0.6)
        pallet += tag_reads(
            epc(n), crossing(20.0, offset), 20.0, 28.0, rng, loss_db=rng.uniform(0.0, 10.0)
        )
    per_tag = [sum(1 for r in pallet if r.epc_hex == epc(n)) for n in range(25)]
    assert min(per_tag) >= 100, "the model should give hundreds of reads per tag"
    strays = stray_reads(rng, 10, 60.0)
    tracker = VisitTracker(STATION, SETTINGS, ZONES)
    visits = run(pallet + strays, tracker)
    inward = [v for v in visits if v.direction == "in"]
    assert sorted(v.epc_hex for v in inward) == sorted(epc(n) for n in range(25))
    assert all(not v.stray and v.confidence >= SETTINGS.min_confidence for v in inward)
    assert all(v.zones == ("outside", "inside") and v.reader == "portal" for v in inward)
    assert all(v.reads == per_tag[int(v.epc_hex[-8:], 16)] for v in inward)
    assert tracker.stats.reads_observed == len(pallet) + len(strays)
    assert sum(v.reads for v in visits) == len(pallet) + len(strays), "every read is in a visit"
    assert tracker.open_visits() == 0


def test_thirty_strays_parked_inside_make_no_inward_visit() -> None:
    rng = random.Random(5)
    reads = stray_reads(rng, 30, 600.0)
    tracker = VisitTracker(STATION, SETTINGS, ZONES)
    visits = run(reads, tracker)
    assert len(visits) > 30, "fades split the parked tags into several visits each"
    assert [v for v in visits if v.direction in ("in", "out")] == []
    assert all(v.stray for v in visits), {v.reason for v in visits if not v.stray}
    leaked = [v for v in visits if "outside" in v.zones]
    assert leaked, "the model leaks reads onto the outside antennas"
    outside_first = [v for v in visits if v.zones[0] == "outside"]
    assert len(outside_first) > 10, "muted inside antennas make visits that start outside"
    assert tracker.stats.strays == len(visits)


def test_item_carried_in_and_back_out_is_one_in_out_visit() -> None:
    rng = random.Random(8)
    visits = run(tag_reads(epc(1), there_and_back(0.0, 2.0), 0.0, 11.0, rng))
    assert [(v.direction, v.stray) for v in visits] == [("in-out", False)]


def test_reversal_hold_joins_a_quick_return_across_a_gap() -> None:
    rng = random.Random(9)
    path = there_and_back(0.0, 4.0)
    gap = [(5.5, 9.0)]  # deep inside, unseen for 3.5 s (longer than absent_s), then back out
    reads = tag_reads(epc(1), path, 0.0, 16.0, rng, fades=gap)
    plain = run(reads)
    assert [v.direction for v in plain] == ["in", "out"], "without the hold: a receipt"
    held = run(reads, VisitTracker(STATION, SmoothingSettings(reversal_hold_s=5.0), ZONES))
    assert [v.direction for v in held] == ["in-out"]
    assert held[0].reads == len(reads)


# -- visits ------------------------------------------------------------------------------------


def read(
    at_s: float,
    antenna: int = 3,
    rssi: float | None = -50.0,
    tag: str = "AA",
    *,
    reader: str = "portal",
    read_count: int = 1,
) -> TagRead:
    return TagRead(
        reader=reader,
        station=STATION,
        epc_hex=tag,
        antenna=antenna,
        at_s=T0 + at_s,
        rssi_dbm=rssi,
        read_count=read_count,
    )


def test_tag_back_after_absent_starts_a_new_visit_even_without_expire() -> None:
    tracker = VisitTracker(STATION, SETTINGS, ZONES)
    for at in (0.0, 1.0, 2.0, 5.5, 6.0):
        tracker.observe(read(at))
    assert tracker.open_visits() == 1
    visits = tracker.expire(T0 + 6.0)
    assert [(v.first_seen_s - T0, v.last_seen_s - T0, v.reads) for v in visits] == [(0.0, 2.0, 3)]
    later = tracker.expire(T0 + 9.1)
    assert [(v.first_seen_s - T0, v.reads) for v in later] == [(5.5, 2)]
    assert tracker.open_visits() == 0
    assert tracker.stats.visits_ended == 2


def test_visit_ends_only_after_absent_s() -> None:
    tracker = VisitTracker(STATION, SETTINGS, ZONES)
    tracker.observe(read(0.0))
    tracker.observe(read(0.5))
    assert tracker.expire(T0 + 3.5) == []
    assert len(tracker.expire(T0 + 3.51)) == 1


def test_reads_below_the_floor_are_counted_and_ignored() -> None:
    tracker = VisitTracker(STATION, SmoothingSettings(rssi_floor_dbm=-70.0), ZONES)
    for i in range(10):
        tracker.observe(read(i * 0.1, rssi=-75.0))
    tracker.observe(read(1.0, rssi=-70.0))
    tracker.observe(read(1.1, rssi=None))
    assert tracker.stats.ignored_below_floor == 10
    assert tracker.stats.reads_observed == 12
    (visit,) = tracker.expire(T0 + 100)
    assert (visit.first_seen_s, visit.reads, visit.peak_rssi_dbm) == (T0 + 1.0, 2, -70.0)


def test_evidence_fields_of_a_visit() -> None:
    tracker = VisitTracker(STATION, SETTINGS, {**ZONES, "side": ZoneMap.from_config({})})
    tracker.observe(read(0.0, antenna=1, rssi=-60.0))
    tracker.observe(read(0.1, antenna=2, rssi=-48.5, read_count=4))
    tracker.observe(read(0.2, antenna=9, rssi=-40.0, reader="side"))
    tracker.observe(read(0.3, antenna=3, rssi=-55.0))
    (visit,) = tracker.expire(T0 + 100)
    assert visit.reads == 7
    assert visit.reader == "portal"
    assert visit.antennas == (1, 2, 3, 9)
    assert visit.zones == ("outside", "inside"), "unzoned antennas count, but are not a zone"
    assert visit.peak_rssi_dbm == -40.0
    assert [(z.zone, z.reads, z.peak_rssi_dbm) for z in visit.zone_detail] == [
        ("outside", 5, -48.5),
        ("", 1, -40.0),
        ("inside", 1, -55.0),
    ]
    assert visit.dwell_s == pytest.approx(0.3)


def test_clock_going_backwards_never_makes_negative_durations() -> None:
    tracker = VisitTracker(STATION, SETTINGS, ZONES)
    for at in (100.0, 100.5, 101.0, 20.0, 20.1, 101.2, 0.0):
        tracker.observe(read(at, antenna=1 if at < 100.6 else 3))
    (visit,) = tracker.expire(T0 + 10_000)
    assert visit.first_seen_s == T0 + 100.0
    assert visit.last_seen_s == T0 + 101.2
    assert visit.reads == 7
    assert all(z.last_seen_s >= z.first_seen_s >= visit.first_seen_s for z in visit.zone_detail)
    assert tracker.stats.reads_out_of_order == 3


def test_visits_come_out_oldest_first() -> None:
    tracker = VisitTracker(STATION, SETTINGS, ZONES)
    for i, tag in enumerate(["CC", "AA", "BB"]):
        tracker.observe(read(i * 0.1, tag=tag))
    tracker.observe(read(2.0, tag="CC"))
    assert [v.epc_hex for v in tracker.expire(T0 + 100)] == ["CC", "AA", "BB"]


def test_zone_map_from_config() -> None:
    zones = ZoneMap.from_config({"outside": [1, 2], "inside": [3, 4]})
    assert (zones.zone_of(1), zones.zone_of(4), zones.zone_of(7)) == ("outside", "inside", "")
    assert zones.names == {"outside", "inside"}
    with pytest.raises(ConfigError) as caught:
        ZoneMap.from_config({"outside": [1, 2], "inside": [2, 3]})
    assert caught.value.key == "zones.inside"
    with pytest.raises(ConfigError):
        ZoneMap.from_config({"outside": [0]})


# -- restarts and bounds -----------------------------------------------------------------------


def test_snapshot_mid_visit_restores_the_same_visits() -> None:
    rng = random.Random(11)
    reads = sorted(
        tag_reads(epc(1), crossing(0.0, 0.0), 0.0, 8.0, rng)
        + tag_reads(epc(2), parked(1.5), 0.0, 40.0, rng, step_s=0.05),
        key=lambda r: r.at_s,
    )
    straight = run(reads)
    half = len(reads) // 2
    first = VisitTracker(STATION, SETTINGS, ZONES)
    head = run(reads[:half], first, end=False)
    snapshot = json.loads(json.dumps(first.snapshot()))
    resumed = VisitTracker.restore(STATION, SETTINGS, ZONES, snapshot)
    tail = run(reads[half:], resumed)
    assert head + tail == straight
    assert {v.direction for v in straight} == {"in", "none"}


reads_strategy = st.lists(
    st.tuples(
        st.sampled_from(["AA", "BB", "CC"]),
        st.sampled_from([1, 2, 3, 4, 5]),
        st.one_of(st.none(), st.floats(-85.0, -30.0)),
        st.floats(-0.5, 4.0),
        st.integers(1, 3),
    ),
    min_size=1,
    max_size=60,
)


def _build(steps: list[tuple[str, int, float | None, float, int]]) -> list[TagRead]:
    at = 0.0
    out = []
    for tag, antenna, rssi, gap, count in steps:
        at += gap
        out.append(read(at, antenna=antenna, rssi=rssi, tag=tag, read_count=count))
    return out


def _key(visits: list[Visit]) -> list[Visit]:
    return sorted(visits, key=lambda v: (v.first_seen_s, v.epc_hex))


@settings(max_examples=150, deadline=None)
@given(reads_strategy, st.integers(0, 60), st.booleans())
def test_snapshot_anywhere_gives_identical_visits(
    steps: list[tuple[str, int, float | None, float, int]], split: int, hold: bool
) -> None:
    tuned = SmoothingSettings(absent_s=1.5, bin_s=0.05, reversal_hold_s=2.0 if hold else 0.0)
    reads = _build(steps)
    split = min(split, len(reads))
    straight = VisitTracker(STATION, tuned, ZONES)
    for r in reads:
        straight.observe(r)
    expected = straight.expire(T0 + 10_000)
    first = VisitTracker(STATION, tuned, ZONES)
    for r in reads[:split]:
        first.observe(r)
    resumed = VisitTracker.restore(STATION, tuned, ZONES, json.loads(json.dumps(first.snapshot())))
    for r in reads[split:]:
        resumed.observe(r)
    assert _key(resumed.expire(T0 + 10_000)) == _key(expected)
    assert resumed.stats.as_dict() == straight.stats.as_dict()


@settings(max_examples=100, deadline=None)
@given(reads_strategy, st.integers(0, 60))
def test_expiring_at_the_split_changes_nothing(
    steps: list[tuple[str, int, float | None, float, int]], split: int
) -> None:
    tuned = SmoothingSettings(absent_s=1.5, bin_s=0.05)
    reads = _build([(t, a, r, abs(g), c) for t, a, r, g, c in steps])  # time only moves on
    split = min(split, len(reads))
    straight = VisitTracker(STATION, tuned, ZONES)
    for r in reads:
        straight.observe(r)
    expected = straight.expire(T0 + 10_000)
    first = VisitTracker(STATION, tuned, ZONES)
    for r in reads[:split]:
        first.observe(r)
    head = first.expire(reads[split - 1].at_s) if split else []
    resumed = VisitTracker.restore(STATION, tuned, ZONES, json.loads(json.dumps(first.snapshot())))
    for r in reads[split:]:
        resumed.observe(r)
    assert _key(head + resumed.expire(T0 + 10_000)) == _key(expected)


def test_a_million_reads_keep_constant_state() -> None:
    tracker = VisitTracker(STATION, SETTINGS, ZONES)
    sizes = []
    at = 0.0
    for checkpoint in (100_000, 1_000_000):  # every time bin is in use from 32 s on
        while tracker.stats.reads_observed < checkpoint:
            tracker.observe(read(at, antenna=1 + tracker.stats.reads_observed % 4, rssi=-50.0))
            at += 0.001
        snapshot = tracker.snapshot()
        sizes.append(len(json.dumps(snapshot)))
        states = snapshot["open"]
        assert isinstance(states, list)
        assert len(states) == 1
        assert len(states[0]["bins"]) <= 4 * 32
    assert tracker.open_visits() == 1, "a tag that never leaves stays one open visit"
    assert tracker.expire(T0 + at) == [], "and makes nothing until it leaves"
    assert max(sizes) < 2_500, sizes
    (visit,) = tracker.expire(T0 + at + 10)
    assert visit.reads == 1_000_000
    assert visit.stray, "read alike by both zones for 1000 s: sitting at the threshold"
    assert visit.dwell_s == pytest.approx(1000.0, abs=0.01)


@pytest.mark.parametrize(
    "snapshot",
    [{"v": 99}, {"v": 1, "open": "x"}, {"v": 1, "open": [{"epc": "AA"}]}, {"v": 1, "ended": [{}]}],
)
def test_restore_rejects_what_is_not_a_snapshot(snapshot: dict[str, object]) -> None:
    with pytest.raises(InputError):
        VisitTracker.restore(STATION, SETTINGS, ZONES, snapshot)


def test_restore_after_a_zone_left_the_config_keeps_its_evidence() -> None:
    with_dock = {"portal": ZoneMap.from_config({"outside": [1, 2], "inside": [3, 4], "dock": [5]})}
    tracker = VisitTracker(STATION, SETTINGS, with_dock)
    for tag in ("AA", "BB"):
        tracker.observe(read(0.0, antenna=5, tag=tag))
        tracker.observe(read(0.1, antenna=3, tag=tag))
    snapshot = json.loads(json.dumps(tracker.snapshot()))
    resumed = VisitTracker.restore(STATION, SETTINGS, ZONES, snapshot)
    resumed.observe(read(0.2, antenna=5, tag="AA"))
    visits = resumed.expire(T0 + 100)
    assert [(v.epc_hex, v.zones, v.reads) for v in visits] == [
        ("AA", ("dock", "inside"), 3),
        ("BB", ("dock", "inside"), 2),
    ]
