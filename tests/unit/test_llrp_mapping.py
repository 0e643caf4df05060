"""Mapping of sllurp tag dicts, as sllurp itself decodes them from recorded frames."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sllurp.llrp import LLRPMessage

from gateway.errors import FrameError
from gateway.readers.llrp.mapping import MIN_PLAUSIBLE_EPOCH_S, map_tag
from gateway.readers.llrp.simulator import replay_frames

NOW_S = 1_795_000_000.0


def tags_in(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for frame in replay_frames(path):
        msg = LLRPMessage(msgbytes=frame)
        if msg.getName() == "RO_ACCESS_REPORT":
            out.extend(msg.msgdict["RO_ACCESS_REPORT"]["TagReportData"])
    return out


@pytest.mark.parametrize("n", range(1, 10))
def test_edgex_reports_map_to_their_recorded_values(conformance: Path, n: int) -> None:
    path = conformance / "llrp" / "edgex" / f"ROAccessReport-00{n}.bytes"
    view = json.loads(path.with_suffix(".json").read_text())
    tags = tags_in(path)
    assert len(tags) == len(view["TagReportData"])
    for tag, seen in zip(tags, view["TagReportData"], strict=True):
        first_us = tag["FirstSeenTimestampUTC"]
        mapped = map_tag(tag, reader="r", station="s", received_at_s=first_us / 1e6 + 0.5)
        read = mapped.read
        assert read.epc_hex == tag["EPC"].decode().upper()
        assert read.epc_hex.startswith("30")  # SGTIN-96 in the recorded R420 reads
        assert read.antenna == seen["AntennaID"]
        assert read.rssi_dbm == float(seen["PeakRSSI"])
        assert read.at_s == first_us / 1e6
        assert not mapped.clock_replaced


def test_recorded_reader_clock_far_from_now_is_replaced(conformance: Path) -> None:
    tag = tags_in(conformance / "llrp" / "edgex" / "ROAccessReport-001.bytes")[0]
    mapped = map_tag(tag, reader="r", station="s", received_at_s=NOW_S, max_clock_skew_s=300)
    assert mapped.clock_replaced
    assert mapped.read.at_s == NOW_S


def test_ltk_reports_map_every_tag_with_epc(conformance: Path) -> None:
    tags = tags_in(conformance / "llrp" / "ltk" / "dx101_b.bin")
    assert tags
    for tag in tags:
        read = map_tag(tag, reader="r", station="s", received_at_s=NOW_S).read
        assert read.epc_hex == tag["EPC"].decode().upper()
        assert read.epc_hex  # LTK uses odd EPC sizes; passed on as read
        assert read.antenna == tag.get("AntennaID", 0)
        assert read.read_count >= 1


@pytest.mark.parametrize(
    ("ts_us", "replaced"),
    [
        (int(NOW_S * 1e6), False),
        (int((NOW_S - 299) * 1e6), False),
        (int((NOW_S - 301) * 1e6), True),
        (int(946_684_800 * 1e6), True),  # 2000-01-01: a reader that never got NTP
        (int((MIN_PLAUSIBLE_EPOCH_S - 1) * 1e6), True),
        (None, False),
    ],
)
def test_reader_clock_checks(ts_us: int | None, replaced: bool) -> None:
    tag: dict[str, Any] = {"EPC": b"3034257bf7194e4000001a85", "AntennaID": 2}
    if ts_us is not None:
        tag["LastSeenTimestampUTC"] = ts_us
    mapped = map_tag(tag, reader="r", station="s", received_at_s=NOW_S, max_clock_skew_s=300)
    assert mapped.clock_replaced is replaced
    expect = NOW_S if (replaced or ts_us is None) else ts_us / 1e6
    assert mapped.read.at_s == pytest.approx(expect)


def test_last_seen_preferred_and_fields_mapped() -> None:
    tag = {
        "EPC-96": b"3034257bf7194e4000001a85",
        "EPC": b"3034257bf7194e4000001a85",
        "AntennaID": 3,
        "PeakRSSI": -61,
        "ChannelIndex": 7,
        "TagSeenCount": 4,
        "FirstSeenTimestampUTC": int((NOW_S - 2) * 1e6),
        "LastSeenTimestampUTC": int((NOW_S - 1) * 1e6),
    }
    read = map_tag(tag, reader="door-3-portal", station="door-3", received_at_s=NOW_S).read
    assert (read.reader, read.station, read.epc_hex) == (
        "door-3-portal",
        "door-3",
        "3034257BF7194E4000001A85",
    )
    assert (read.antenna, read.rssi_dbm, read.channel, read.read_count) == (3, -61.0, 7, 4)
    assert read.at_s == pytest.approx(NOW_S - 1)


@pytest.mark.parametrize("epc", [b"", None, b"zz12", 5])
def test_tag_without_usable_epc_is_frame_error(epc: object) -> None:
    tag: dict[str, Any] = {"AntennaID": 1}
    if epc is not None:
        tag["EPC"] = epc
    with pytest.raises(FrameError):
        map_tag(tag, reader="r", station="s", received_at_s=NOW_S)


@given(st.binary(min_size=2, max_size=64).filter(lambda b: len(b) % 2 == 0), st.booleans())
def test_epc_normalised_to_uppercase_hex(raw: bytes, as_str: bool) -> None:
    hexed = raw.hex()
    tag = {"EPC": hexed if as_str else hexed.encode()}
    assert map_tag(tag, reader="r", station="s", received_at_s=NOW_S).read.epc_hex == (
        hexed.upper()
    )
