"""Direction and strays from zone evidence: table tests over synthetic read patterns."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from gateway.domain.direction import (
    DirectionEvidence,
    SmoothingSettings,
    TimeBin,
    ZoneEvidence,
    classify_direction,
    classify_visit,
)
from gateway.domain.events import TagRead
from gateway.domain.smoothing import ZoneMap, evidence_of
from gateway.errors import ConfigError

SETTINGS = SmoothingSettings()
ZONES = {"portal": ZoneMap.from_config({"outside": [1, 2], "inside": [3, 4]})}
OUT_ANTENNAS = (1, 2)
IN_ANTENNAS = (3, 4)

# One read pattern: (start_s, end_s, zone, rssi_dbm, reads). Reads are spread evenly over the
# span and alternate between the zone's two antennas.
Span = tuple[float, float, str, float, int]


def reads_of(spans: Sequence[Span], *, seed: int = 1, jitter_db: float = 0.0) -> list[TagRead]:
    rng = random.Random(seed)
    out: list[TagRead] = []
    for start_s, end_s, zone, rssi, count in spans:
        antennas = {"outside": OUT_ANTENNAS, "inside": IN_ANTENNAS, "none": (7, 8)}[zone]
        step = (end_s - start_s) / max(1, count - 1)
        for i in range(count):
            level = rssi + (rng.gauss(0.0, jitter_db) if jitter_db else 0.0)
            out.append(
                TagRead(
                    reader="portal",
                    station="door-3",
                    epc_hex="3074257BF7194E4000001A85",
                    antenna=antennas[i % 2],
                    at_s=1000.0 + start_s + i * step,
                    rssi_dbm=round(level, 1),
                )
            )
    out.sort(key=lambda r: r.at_s)
    return out


def verdict(
    spans: Sequence[Span], *, seed: int = 1, jitter_db: float = 0.0
) -> tuple[str, float, bool, str]:
    evidence = evidence_of(reads_of(spans, seed=seed, jitter_db=jitter_db), SETTINGS, ZONES)
    v = classify_visit(evidence, SETTINGS)
    return v.direction, v.confidence, v.stray, v.reason


# Each row: name, spans, expected direction, stray, minimum confidence, maximum confidence.
TABLE: list[tuple[str, list[Span], str, bool, float, float]] = [
    (
        "clean in",
        [(0.0, 2.0, "outside", -50, 60), (1.8, 4.0, "inside", -50, 60)],
        "in", False, 0.8, 1.0,
    ),
    (
        "clean out",
        [(0.0, 2.0, "inside", -50, 60), (1.8, 4.0, "outside", -50, 60)],
        "out", False, 0.8, 1.0,
    ),
    (
        "in with a weaker inside zone (8 dB)",
        [(0.0, 2.0, "outside", -48, 40), (1.5, 4.0, "inside", -56, 30)],
        "in", False, 0.8, 1.0,
    ),
    (
        "in then parked just inside the door for a minute",
        [(0.0, 1.5, "outside", -50, 40), (1.2, 60.0, "inside", -50, 600)],
        "in", False, 0.8, 1.0,
    ),
    (
        "staged on the dock for a minute, then in",
        [(0.0, 60.0, "outside", -62, 300), (60.0, 61.5, "outside", -45, 30),
         (61.0, 63.0, "inside", -47, 40)],
        "in", False, 0.6, 1.0,
    ),
    (
        "in and back out",
        [(0.0, 1.5, "outside", -50, 40), (1.5, 3.5, "inside", -50, 50),
         (3.5, 5.0, "outside", -50, 40)],
        "in-out", False, 0.0, 1.0,
    ),
    (
        "in and back out after lingering inside",
        [(0.0, 1.5, "outside", -50, 40), (1.5, 30.0, "inside", -50, 400),
         (30.0, 31.5, "outside", -50, 40)],
        "in-out", False, 0.0, 1.0,
    ),
    (
        "out and back in",
        [(0.0, 1.5, "inside", -50, 40), (1.5, 3.5, "outside", -50, 50),
         (3.5, 5.0, "inside", -50, 40)],
        "out-in", False, 0.0, 1.0,
    ),
    (
        "only inside, brief and weak",
        [(0.0, 1.0, "inside", -74, 5)],
        "none", True, 0.0, 0.0,
    ),
    (
        "only inside, parked for two minutes",
        [(0.0, 120.0, "inside", -45, 2000)],
        "none", True, 0.0, 0.0,
    ),
    (
        "inside strong, occasional weak outside reads (leak), first read outside",
        [(0.0, 0.0, "outside", -70, 1), (0.1, 30.0, "inside", -45, 500),
         (10.0, 25.0, "outside", -69, 6)],
        "none", True, 0.0, 0.0,
    ),
    (
        "inside strong, weak outside reads only at the start",
        [(0.0, 1.0, "outside", -68, 8), (0.5, 40.0, "inside", -46, 600)],
        "none", True, 0.0, 0.0,
    ),
    (
        "inside strong, one strong reflected outside read at the start",
        [(0.0, 0.0, "outside", -47, 1), (0.2, 40.0, "inside", -46, 600),
         (5.0, 35.0, "outside", -72, 6)],
        "none", True, 0.0, 0.0,
    ),
    (
        "sitting at the threshold, both zones alike, for a minute",
        [(0.0, 60.0, "outside", -50, 500), (0.0, 60.0, "inside", -50, 500)],
        "none", True, 0.0, 0.59,
    ),
    (
        "single read",
        [(0.0, 0.0, "outside", -45, 1)],
        "none", True, 0.0, 0.0,
    ),
    (
        "one read per zone, in order",
        [(0.0, 0.0, "outside", -45, 1), (1.0, 1.0, "inside", -45, 1)],
        "none", True, 0.0, 0.0,
    ),
    (
        "few reads per zone, in order: direction with low confidence",
        [(0.0, 0.5, "outside", -45, 3), (1.0, 1.5, "inside", -45, 3)],
        "in", False, 0.5, 0.61,
    ),
    (
        "unzoned antennas only on a zoned reader",
        [(0.0, 2.0, "none", -45, 40)],
        "none", True, 0.0, 0.0,
    ),
    (
        "unzoned antennas do not disturb a clean in",
        [(0.0, 2.0, "outside", -50, 60), (0.0, 4.0, "none", -40, 60),
         (1.8, 4.0, "inside", -50, 60)],
        "in", False, 0.8, 1.0,
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spans", "direction", "stray", "low", "high"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_direction_table(
    spans: Sequence[Span], direction: str, stray: bool, low: float, high: float
) -> None:
    got_direction, confidence, got_stray, reason = verdict(spans)
    assert (got_direction, got_stray) == (direction, stray), reason
    assert low <= confidence <= high, reason
    assert reason


@pytest.mark.parametrize("seed", range(5))
def test_noisy_rssi_keeps_clean_passages(seed: int) -> None:
    inward: list[Span] = [(0.0, 2.0, "outside", -55, 60), (1.8, 4.0, "inside", -55, 60)]
    leak: list[Span] = [(0.0, 0.0, "outside", -70, 1), (0.1, 30.0, "inside", -48, 500),
            (10.0, 25.0, "outside", -70, 6)]  # fmt: skip
    assert verdict(inward, seed=seed, jitter_db=4.0)[0] == "in"
    assert verdict(leak, seed=seed, jitter_db=3.0)[2] is True


def test_classify_direction_is_the_triple_of_classify_visit() -> None:
    evidence = evidence_of(
        reads_of([(0.0, 2.0, "outside", -50, 60), (1.8, 4.0, "inside", -50, 60)]), SETTINGS, ZONES
    )
    direction, confidence, reason = classify_direction(evidence, SETTINGS)
    full = classify_visit(evidence, SETTINGS)
    assert (direction, confidence, reason) == (full.direction, full.confidence, full.reason)


def test_reader_without_zones_is_presence_only() -> None:
    reads = [
        TagRead(reader="bench", station="bench-1", epc_hex="AB", antenna=1, at_s=float(i),
                rssi_dbm=-50.0)
        for i in range(5)
    ]  # fmt: skip
    v = classify_visit(evidence_of(reads, SETTINGS, ZONES), SETTINGS)
    assert (v.direction, v.stray, v.reason) == ("none", False, "no_zones")
    weak = [TagRead(reader="bench", station="bench-1", epc_hex="AB", antenna=1, at_s=float(i),
                    rssi_dbm=-78.0) for i in range(5)]  # fmt: skip
    assert classify_visit(evidence_of(weak, SETTINGS, ZONES), SETTINGS).stray is True


def test_hand_built_evidence_without_rssi() -> None:
    bins = (
        TimeBin(outside_weight=10, outside_reads=10),
        TimeBin(outside_weight=5, outside_reads=5, inside_weight=5, inside_reads=5),
        TimeBin(inside_weight=10, inside_reads=10),
    )
    evidence = DirectionEvidence(
        reads=40,
        dwell_s=3.0,
        directional=True,
        outside=ZoneEvidence(reads=15),
        inside=ZoneEvidence(reads=15),
        bins=bins,
    )
    direction, confidence, _ = classify_direction(evidence, SETTINGS)
    assert direction == "in"
    assert confidence == pytest.approx(0.8889, abs=1e-3)
    reverse = DirectionEvidence(
        reads=40, dwell_s=3.0, directional=True,
        outside=ZoneEvidence(reads=15), inside=ZoneEvidence(reads=15), bins=bins[::-1],
    )  # fmt: skip
    assert classify_direction(reverse, SETTINGS)[0] == "out"


def test_thresholds_are_parameters() -> None:
    few: list[Span] = [(0.0, 0.5, "outside", -45, 3), (1.0, 1.5, "inside", -45, 3)]
    evidence = evidence_of(reads_of(few), SETTINGS, ZONES)
    assert classify_visit(evidence, SETTINGS).direction == "in"
    demanding = SmoothingSettings(min_confidence=0.7)
    assert classify_visit(evidence, demanding).direction == "none"
    more_reads = SmoothingSettings(full_confidence_reads=10)
    assert classify_visit(evidence, more_reads).direction == "none"
    strict = SmoothingSettings(min_reads=4)
    assert classify_visit(evidence, strict).stray is True


@pytest.mark.parametrize(
    "bad",
    [
        {"absent_s": 0.0},
        {"min_confidence": 1.5},
        {"min_reads": 0},
        {"bin_s": -1.0},
        {"outside_zone": "inside"},
        {"dominance_ratio": 0.5},
    ],
)
def test_bad_settings_name_the_key(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError) as caught:
        SmoothingSettings(**bad)  # type: ignore[arg-type]
    assert caught.value.key == f"smoothing.{next(iter(bad))}"
