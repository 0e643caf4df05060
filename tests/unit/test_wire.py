"""Wire formats: raw-event JSONL lines and the movement message."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.events import BarcodeScan, TagRead
from gateway.domain.movements import Evidence, Item, Movement, movement_id
from gateway.domain.wire import (
    parse_raw_line,
    raw_event_dict,
    render_movement_json,
    rfc3339,
)
from gateway.errors import InputError

NOW = 1_795_000_000.0


def test_issue_lines_parse() -> None:
    scan = parse_raw_line(
        '{"kind": "barcode", "data": "]C10180614141123458216789"}',
        reader="r",
        station="door-3",
        now_s=NOW,
    )
    assert scan == BarcodeScan(
        reader="r", station="door-3", data="]C10180614141123458216789", at_s=NOW
    )
    tag = parse_raw_line(
        '{"kind": "tag", "epc": "3074257bf7194e4000001a85", "antenna": 3, "rssi_dbm": -51.5,'
        ' "at": "2026-11-22T09:14:03.120Z", "station": "door-4"}',
        reader="r",
        station="door-3",
        now_s=NOW,
    )
    assert isinstance(tag, TagRead)
    assert tag.epc_hex == "3074257BF7194E4000001A85"
    assert tag.station == "door-4"
    assert rfc3339(tag.at_s) == "2026-11-22T09:14:03.120Z"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"kind": "smell"}', "unknown kind"),
        ('{"kind": "barcode"}', "'data'"),
        ('{"kind": "tag", "epc": "XYZ"}', "not hex"),
        ('{"kind": "tag", "epc": "30", "antenna": -1}', "antenna"),
        ('{"kind": "tag", "epc": "30", "rssi_dbm": "loud"}', "rssi_dbm"),
        ('{"kind": "barcode", "data": "x", "at": "yesterday"}', "RFC 3339"),
        ('{"kind": "barcode", "data": "x", "station": ""}', "station"),
    ],
)
def test_bad_lines_say_what_is_wrong(line: str, reason: str) -> None:
    with pytest.raises(InputError) as info:
        parse_raw_line(line, reader="r", station="s", now_s=NOW)
    assert reason in info.value.reason


def test_overlong_line_is_refused_before_parsing() -> None:
    with pytest.raises(InputError, match="longer"):
        parse_raw_line("x" * 70_000, reader="r", station="s", now_s=NOW)


times = st.integers(min_value=946_684_800_000, max_value=4_102_444_800_000).map(
    lambda ms: ms / 1000
)
names = st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=12)


@given(
    st.one_of(
        st.builds(
            TagRead,
            reader=names,
            station=names,
            epc_hex=st.text(alphabet="0123456789ABCDEF", min_size=4, max_size=64),
            antenna=st.integers(0, 64),
            at_s=times,
            rssi_dbm=st.none() | st.integers(-120, 0).map(float),
            read_count=st.integers(1, 1000),
            channel=st.none() | st.integers(0, 50),
        ),
        st.builds(
            BarcodeScan,
            reader=names,
            station=names,
            data=st.text(min_size=1, max_size=80).filter(str.strip),
            at_s=times,
            device=st.none() | names,
        ),
    )
)
def test_raw_event_round_trip(event: TagRead | BarcodeScan) -> None:
    line = json.dumps(raw_event_dict(event))
    assert parse_raw_line(line, reader="x", station="y", now_s=0.0) == event


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_lines_raise_only_input_error(line: bytes | str) -> None:
    with contextlib.suppress(InputError):
        parse_raw_line(line, reader="r", station="s", now_s=NOW)


def test_movement_message_matches_the_design_contract() -> None:
    movement = Movement(
        id=movement_id("dock-3", "urn:epc:id:sgtin:0614141.812345.6789", "door-3", "receipt", NOW),
        type="receipt",
        occurred_at_s=NOW + 2,
        station="door-3",
        item=Item(epc="urn:epc:id:sgtin:0614141.812345.6789", gtin="80614141123458", serial="6789"),
        evidence=Evidence(
            source="rfid",
            reader="door-3-portal",
            first_seen_s=NOW,
            last_seen_s=NOW + 2,
            reads=17,
            antennas=(1, 3),
            peak_rssi_dbm=-48.5,
        ),
        direction="in",
        rma="RMA-000123",
        expected=True,
    )
    message = json.loads(render_movement_json(movement, 42, "milan-returns", "dock-3"))
    assert list(message)[:15] == [
        "schema",
        "id",
        "seq",
        "type",
        "occurred_at",
        "site",
        "gateway",
        "station",
        "direction",
        "item",
        "rma",
        "expected",
        "disposition",
        "location",
        "evidence",
    ]
    assert message["seq"] == 42
    assert message["item"] == {
        "epc": "urn:epc:id:sgtin:0614141.812345.6789",
        "gtin": "80614141123458",
        "serial": "6789",
    }
    assert message["evidence"]["antennas"] == [1, 3]
    assert message["evidence"]["first_seen"].endswith("Z")


def test_movement_ids_are_deterministic_and_distinct() -> None:
    a = movement_id("dock-3", "item", "door-3", "receipt", NOW)
    assert a == movement_id("dock-3", "item", "door-3", "receipt", NOW)
    assert a != movement_id("dock-3", "item", "door-3", "receipt", NOW + 1)
    assert a != movement_id("dock-4", "item", "door-3", "receipt", NOW)
    assert a != movement_id("dock-3", "item", "door-3", "restock", NOW)
