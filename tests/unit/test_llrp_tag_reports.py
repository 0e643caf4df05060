"""The lean RO_ACCESS_REPORT decoder against sllurp's, field by field: recorded and made frames."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sllurp.llrp import LLRPMessage

from gateway.domain.events import TagRead
from gateway.errors import FrameError
from gateway.readers.llrp import frames as f
from gateway.readers.llrp.mapping import KEEP_STRONGEST, map_report, map_reported, map_tag
from gateway.readers.llrp.simulator import replay_frames
from gateway.readers.llrp.tag_reports import (
    ReportedTag,
    decode_tag_reports,
    is_ro_access_report,
)

NOW_S = 1_795_000_000.0
RECORDED = [
    "ltk/dx101_a.bin",
    "ltk/dx101_b.bin",
    "ltk/dx101_c.bin",
    "ltk/dx101_e.bin",
    *(f"edgex/ROAccessReport-00{i}.bytes" for i in range(1, 10)),
]
_FIELDS = (
    ("AntennaID", "antenna"),
    ("PeakRSSI", "peak_rssi_dbm"),
    ("ChannelIndex", "channel"),
    ("FirstSeenTimestampUTC", "first_seen_us"),
    ("LastSeenTimestampUTC", "last_seen_us"),
    ("TagSeenCount", "seen_count"),
)


def sllurp_report(frame: bytes) -> list[dict[str, Any]] | None:
    """sllurp's tag dicts of a report frame, or None when sllurp cannot decode it."""
    try:
        msg = LLRPMessage(msgbytes=frame)
    except Exception:
        return None
    tags: list[dict[str, Any]] = msg.msgdict["RO_ACCESS_REPORT"]["TagReportData"]
    return tags


def mapped_or_error(fn: Any, tag: Any, received_at_s: float) -> tuple[TagRead, bool] | str:
    try:
        mapped = fn(tag, reader="r", station="s", received_at_s=received_at_s)
    except FrameError as err:
        return f"FrameError: {err.reason}"
    return mapped.read, mapped.clock_replaced


def assert_same(frame: bytes) -> bool:
    """Both decoders agree on `frame`; True when the lean decoder took it (not left to sllurp)."""
    lean = decode_tag_reports(frame)
    if lean is None:
        return False  # the driver gives this frame to sllurp: same outcome by construction
    theirs = sllurp_report(frame)
    assert theirs is not None, "the lean decoder took a frame sllurp cannot decode"
    assert len(lean) == len(theirs)
    for mine, tag in zip(lean, theirs, strict=True):
        assert mine.epc_hex == tag["EPC"].decode().upper()
        for key, attr in _FIELDS:
            assert getattr(mine, attr) == tag.get(key), key
        ts_us = tag.get("LastSeenTimestampUTC", tag.get("FirstSeenTimestampUTC"))
        for received_at_s in (NOW_S, (ts_us or 0) / 1e6 + 0.5):
            assert mapped_or_error(map_reported, mine, received_at_s) == mapped_or_error(
                map_tag, tag, received_at_s
            )
    return True


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_reports_decode_as_sllurp_decodes_them(conformance: Path, name: str) -> None:
    reports = [fr for fr in replay_frames(conformance / "llrp" / name) if is_ro_access_report(fr)]
    assert reports
    taken = sum(assert_same(fr) for fr in reports)
    if name.startswith("edgex") or name == "ltk/dx101_b.bin":
        # Plain tag reports: every one must take the lean path, or it is not lean at all.
        assert taken == len(reports), f"{taken}/{len(reports)} taken"


def test_recorded_reports_mostly_take_the_lean_path(conformance: Path) -> None:
    taken = total = 0
    for name in RECORDED:
        for frame in replay_frames(conformance / "llrp" / name):
            if is_ro_access_report(frame):
                total += 1
                taken += assert_same(frame)
    # dx101_a/c/e carry OpSpec results and broken parameters: those stay with sllurp.
    assert taken >= total // 4, f"{taken}/{total}"


def test_simulator_reports_with_every_field_and_long_epcs() -> None:
    sel = f.ContentSelector(spec_index=True, inventory_parameter_spec_id=True, access_spec_id=True)
    tags = [
        f.TagReport(bytes.fromhex("3034257BF7194E4000001A85"), 1, -52, 3, 1, 2, 4),
        f.TagReport(bytes.fromhex("E2801160600002054E2F8BA1C0FF"), 4, -71, 9, 10, 20, 1),
        f.TagReport(b"\x30" * 62, 2, 0, 1, 1_795_000_000_000_000, 1_795_000_000_100_000, 0),
    ]
    frame = f.ro_access_report(7, tags, sel, 3)
    assert assert_same(frame)
    assert assert_same(f.ro_access_report(8, tags, f.ContentSelector(*[False] * 10), 3))


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(
            st.binary(min_size=2, max_size=32).filter(lambda b: len(b) % 2 == 0),
            st.integers(0, 0xFFFF),
            st.integers(-128, 127),
            st.integers(0, 0xFFFF),
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**64 - 1),
            st.integers(0, 0xFFFF),
        ),
        max_size=20,
    ),
    st.integers(0, 0xFFFF),
)
def test_made_reports_decode_as_sllurp_decodes_them(
    tags: list[tuple[bytes, int, int, int, int, int, int]], flags: int
) -> None:
    sel = f.ContentSelector.from_flags(flags)
    frame = f.ro_access_report(1, [f.TagReport(*t) for t in tags], sel, 1)
    assert assert_same(frame)


@settings(max_examples=500, deadline=None, database=None)
@given(st.binary(max_size=200))
def test_any_report_body_is_decoded_as_sllurp_would_or_left_to_it(body: bytes) -> None:
    frame = f.Message(f.RO_ACCESS_REPORT, 1, body).to_bytes()
    assert_same(frame)  # never raises, and when it takes the frame, sllurp agrees


def test_other_messages_and_broken_frames_are_left_to_sllurp() -> None:
    assert decode_tag_reports(f.keepalive(1)) is None
    report = f.ro_access_report(
        1, [f.TagReport(b"\x30" * 12, 1, -50, 1, 1, 1)], f.ContentSelector(), 1
    )
    assert decode_tag_reports(report) is not None
    assert decode_tag_reports(report[:-1]) is None  # length field no longer matches
    # The simulator's "corrupt" fault: an AntennaID cut one byte short.
    body = f.tlv(f.P_TAG_REPORT_DATA, bytes([0x80 | f.TV_ANTENNA_ID, 0]))
    assert decode_tag_reports(f.Message(f.RO_ACCESS_REPORT, 1, body).to_bytes()) is None
    # An OpSpec result (C1G2ReadOpSpecResult, 349) inside a tag report: sllurp's job.
    inner = bytes([0x80 | f.TV_EPC_96]) + b"\x30" * 12 + f.tlv(349, struct.pack("!BHH", 0, 1, 0))
    frame = f.Message(f.RO_ACCESS_REPORT, 1, f.tlv(f.P_TAG_REPORT_DATA, inner)).to_bytes()
    assert decode_tag_reports(frame) is None


def _tag(epc: str, antenna: int, rssi: int | None, last_us: int, count: int | None) -> ReportedTag:
    return ReportedTag(epc, antenna, rssi, 5, last_us - 100, last_us, count)


def test_few_repeats_pass_unchanged_in_arrival_order() -> None:
    t0 = int(NOW_S * 1e6)
    tags = [
        _tag("AA01", 1, -60, t0, 2),
        _tag("AA01", 2, -50, t0 + 1000, 1),
        _tag("AA01", 1, -48, t0 + 2000, None),
        _tag("", 1, -40, t0, 1),
        _tag("BB02", 1, None, t0 + 3000, 3),
    ]
    report = map_report(tags, reader="r", station="s", received_at_s=NOW_S)
    assert report.rejected == 1
    reads = [m.read for m in report.reads]
    assert [(r.epc_hex, r.antenna, r.read_count) for r in reads] == [
        ("AA01", 1, 2),
        ("AA01", 2, 1),
        ("AA01", 1, 1),
        ("BB02", 1, 3),
    ]
    assert [r.at_s for r in reads] == sorted(r.at_s for r in reads)


def test_many_repeats_keep_counts_strongest_reads_and_first_last_seen() -> None:
    t0 = int(NOW_S * 1e6)
    rssis = [-60, -48, -55, -70, -49, -65, -52]
    tags = [_tag("AA01", 1, rssi, t0 + 1000 * k, 2) for k, rssi in enumerate(rssis)]
    tags.insert(3, _tag("BB02", 4, -50, t0 + 2500, 1))
    report = map_report(tags, reader="r", station="s", received_at_s=NOW_S)
    reads = [m.read for m in report.reads]
    mine = [r for r in reads if r.epc_hex == "AA01"]
    assert len(mine) == KEEP_STRONGEST
    assert sum(r.read_count for r in mine) == 2 * len(rssis)
    assert sorted((r.rssi_dbm or 0.0 for r in mine), reverse=True) == [-48.0, -49.0, -52.0]
    assert min(r.at_s for r in mine) == pytest.approx(t0 / 1e6)
    assert max(r.at_s for r in mine) == pytest.approx((t0 + 6000) / 1e6)
    assert [r.epc_hex for r in reads].index("BB02") == 1  # arrival order kept across tags


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["AA01", "BB02", "CC03"]),
            st.integers(1, 3),
            st.none() | st.integers(-90, -30),
            st.integers(0, 10_000_000),
            st.none() | st.integers(0, 50),
        ),
        max_size=60,
    )
)
def test_collapse_keeps_counts_peaks_and_times_of_every_tag_on_every_antenna(
    raw: list[tuple[str, int, int | None, int, int | None]],
) -> None:
    t0 = int(NOW_S * 1e6)
    tags = [_tag(epc, ant, rssi, t0 + dt_us, n) for epc, ant, rssi, dt_us, n in raw]
    before = [
        m.read
        for m in (map_reported(t, reader="r", station="s", received_at_s=NOW_S) for t in tags)
    ]
    after = [m.read for m in map_report(tags, reader="r", station="s", received_at_s=NOW_S).reads]
    for key in {(r.epc_hex, r.antenna) for r in before}:
        old = [r for r in before if (r.epc_hex, r.antenna) == key]
        new = [r for r in after if (r.epc_hex, r.antenna) == key]
        assert len(new) == min(len(old), KEEP_STRONGEST)
        assert sum(r.read_count for r in new) == sum(r.read_count for r in old)
        assert min(r.at_s for r in new) == min(r.at_s for r in old)
        assert max(r.at_s for r in new) == max(r.at_s for r in old)

        def top(reads: list[TagRead]) -> list[float]:
            return sorted((r.rssi_dbm for r in reads if r.rssi_dbm is not None), reverse=True)[:3]

        assert top(new) == top(old)


def test_collapsed_report_counts_replaced_clocks() -> None:
    tags = [_tag("AA01", 1, -60, 5_000_000, 1) for _ in range(10)]
    report = map_report(tags, reader="r", station="s", received_at_s=NOW_S)
    assert len(report.reads) == KEEP_STRONGEST
    assert sum(m.read.read_count for m in report.reads) == 10
    assert all(m.read.at_s == NOW_S for m in report.reads)  # a 1970 clock: receive time
    assert all(m.clock_replaced for m in report.reads)
