"""Topics and ack parsing: table tests and a property over arbitrary bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import InputError
from gateway.sync.acks import MAX_ACK_BYTES, MAX_ACK_IDS, AckIds, AckUpto, parse_ack
from gateway.sync.topics import Topics

T = Topics(prefix="returns", site="milan-returns", gateway="dock-3")


def test_topic_names_follow_design() -> None:
    assert T.base == "returns/milan-returns/dock-3"
    assert T.movements == "returns/milan-returns/dock-3/movements"
    assert T.status == "returns/milan-returns/dock-3/status"
    assert T.kpi == "returns/milan-returns/dock-3/kpi"
    assert T.ack == "returns/milan-returns/dock-3/ack"
    assert T.events == "returns/milan-returns/dock-3/events"
    assert T.cmd("replay") == "returns/milan-returns/dock-3/cmd/replay"
    assert T.cmd_result("replay") == "returns/milan-returns/dock-3/cmd-result/replay"
    assert T.cmd_filter == "returns/milan-returns/dock-3/cmd/+"
    assert T.scans_filter == "returns/milan-returns/dock-3/scans/+"


@pytest.mark.parametrize(
    ("topic", "command", "device"),
    [
        ("returns/milan-returns/dock-3/cmd/expected-returns", "expected-returns", None),
        ("returns/milan-returns/dock-3/cmd/replay", "replay", None),
        ("returns/milan-returns/dock-3/scans/handheld-7", None, "handheld-7"),
        ("returns/milan-returns/dock-3/cmd/", None, None),
        ("returns/milan-returns/dock-3/cmd/a/b", None, None),
        ("returns/milan-returns/dock-4/cmd/replay", None, None),
        ("returns/milan-returns/dock-3/cmd-result/replay", None, None),
        ("returns/milan-returns/dock-3/ack", None, None),
        ("returns/milan-returns/dock-3/scans/", None, None),
        ("other/milan-returns/dock-3/scans/x", None, None),
    ],
)
def test_parse_topics(topic: str, command: str | None, device: str | None) -> None:
    assert T.command_name(topic) == command
    assert T.scan_device(topic) == device


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"ids": ["a", "b"]}', AckIds(("a", "b"))),
        (b'{"ids": []}', AckIds(())),
        (b'{"upto_seq": 0}', AckUpto(0)),
        (b'{"upto_seq": 42}', AckUpto(42)),
        (' {"upto_seq": 7} '.encode("utf-16"), AckUpto(7)),
    ],
)
def test_good_acks(payload: bytes, expected: object) -> None:
    assert parse_ack(payload) == expected


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not JSON"),
        (b"not json", "not JSON"),
        (b"\xff\xfe\xfa", "not JSON"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'"ids"', "not a JSON object"),
        (b"{}", "expected exactly one of 'ids' or 'upto_seq'"),
        (b'{"ids": [], "upto_seq": 1}', "expected exactly one of 'ids' or 'upto_seq'"),
        (b'{"id": ["a"]}', "expected exactly one of 'ids' or 'upto_seq'"),
        (b'{"ids": 5}', "'ids' must be a list"),
        (b'{"ids": "abc"}', "'ids' must be a list"),
        (b'{"ids": [1, 2]}', "'ids' must hold strings"),
        (b'{"ids": [null]}', "'ids' must hold strings"),
        (b'{"ids": [""]}', "an id is empty or longer than 128 characters"),
        (json.dumps({"ids": ["x" * 129]}).encode(), "an id is empty or longer than 128 characters"),
        (b'{"upto_seq": "12"}', "'upto_seq' must be an integer"),
        (b'{"upto_seq": 1.5}', "'upto_seq' must be an integer"),
        (b'{"upto_seq": true}', "'upto_seq' must be an integer"),
        (b'{"upto_seq": -1}', "'upto_seq' out of range"),
        (b'{"upto_seq": 99999999999999999999999}', "'upto_seq' out of range"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b" " * (MAX_ACK_BYTES + 1), f"larger than {MAX_ACK_BYTES} bytes"),
        (json.dumps({"ids": ["a"] * (MAX_ACK_IDS + 1)}).encode(), f"more than {MAX_ACK_IDS} ids"),
    ],
)
def test_bad_acks_name_what_is_wrong(payload: bytes, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_ack(payload)
    assert caught.value.what == "ack"
    assert caught.value.reason == reason


@given(st.binary(max_size=2048))
def test_parse_ack_raises_only_input_error(payload: bytes) -> None:
    try:
        ack = parse_ack(payload)
    except InputError:
        return
    assert isinstance(ack, AckIds | AckUpto)


@given(
    st.one_of(
        st.dictionaries(
            st.sampled_from(["ids", "upto_seq", "x"]),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                lambda children: st.lists(children, max_size=4),
                max_leaves=8,
            ),
            max_size=3,
        ),
        st.lists(st.integers(), max_size=3),
    )
)
def test_parse_ack_on_arbitrary_json(value: object) -> None:
    payload = json.dumps(value).encode()
    try:
        ack = parse_ack(payload)
    except InputError:
        return
    if isinstance(ack, AckIds):
        assert isinstance(value, dict)
        assert list(ack.ids) == value["ids"]
    else:
        assert isinstance(value, dict)
        assert ack.seq == value["upto_seq"]
