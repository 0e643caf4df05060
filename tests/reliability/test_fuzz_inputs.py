"""Fuzzing the input edges: raw-event JSONL lines, the scan framer and the keyboard-wedge decoder.

The claim: bad input raises nothing but InputError (or, for the framer and the key decoder, nothing
at all: a bad line is a `Rejected` frame), never hangs and never holds more than its bound.
"""

from __future__ import annotations

import itertools
import json
import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.domain.events import BarcodeScan, TagRead
from gateway.domain.wire import MAX_RAW_LINE_BYTES, parse_raw_line
from gateway.errors import InputError
from gateway.readers.framing import GS, Rejected, Scan, ScanFramer, Suffix
from gateway.readers.hid.keymap import KEY_CODES, KeyDecoder

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
HEX = frozenset("0123456789ABCDEF")

# JSON values of every shape, small enough to stay fast.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = [
    "kind",
    "epc",
    "data",
    "antenna",
    "at",
    "reader",
    "station",
    "device",
    "rssi_dbm",
    "count",
    "channel",
]
kinds = st.sampled_from(["tag", "barcode"]) | json_values
# Objects that look like raw events, with every field possibly of the wrong type.
event_like = st.fixed_dictionaries(
    {"kind": kinds},
    optional={
        "epc": st.text(alphabet="0123456789abcdefABCDEFxX_ +-", max_size=40) | json_values,
        "data": st.text(max_size=40) | json_values,
        "antenna": st.integers(-5, 70_000) | json_values,
        "at": st.sampled_from(
            [
                "2026-11-22T09:14:03.120Z",
                "2026-11-22T09:14:03+01:00",
                "9999-12-31T23:59:59-23:59",
                "0001-01-01T00:00:00+23:59",
                "2026-13-01T00:00:00Z",
                "yesterday",
            ]
        )
        | json_values,
        "reader": json_values,
        "station": json_values,
        "device": json_values,
        "rssi_dbm": st.floats() | json_values,
        "count": json_values,
        "channel": json_values,
    },
)


def _parse(line: str | bytes) -> TagRead | BarcodeScan | None:
    """Parse a line; None when the product refused it with its own error type."""
    try:
        event = parse_raw_line(line, reader="fuzz-reader", station="fuzz-station", now_s=1.0)
    except InputError:
        return None
    assert isinstance(event, TagRead | BarcodeScan)
    return event


def _has_known_raw_line_bug(obj: object) -> bool:
    """Inputs hitting the bugs the xfail tests below pin (kept out of the main property)."""
    if not isinstance(obj, dict) or obj.get("kind") != "tag":
        return False
    rssi = obj.get("rssi_dbm")
    huge_rssi = isinstance(rssi, int) and not isinstance(rssi, bool) and abs(rssi) > 2**1023
    epc = obj.get("epc")
    loose_hex = isinstance(epc, str) and bool(epc) and not HEX.issuperset(epc.upper())
    return huge_rssi or loose_hex


@FUZZ
@given(line=st.binary(max_size=200) | st.text(max_size=200))
def test_raw_line_arbitrary_text_or_bytes_only_input_error(line: str | bytes) -> None:
    event = _parse(line)
    if event is not None:
        # Arbitrary text that parsed must have been a JSON object with a known kind.
        assert json.loads(line)["kind"] in {"tag", "barcode"}


@FUZZ
@given(obj=event_like)
@example(obj={"kind": "tag", "epc": "3074257BF7194E4000001A85", "at": "9999-12-31T23:59:59-23:59"})
def test_raw_line_event_shaped_objects_only_input_error(obj: dict[str, object]) -> None:
    event = _parse(json.dumps(obj))
    if isinstance(event, TagRead):
        assert event.epc_hex
        assert HEX.issuperset(event.epc_hex)
        assert 0 <= event.antenna <= 65535
    elif isinstance(event, BarcodeScan):
        assert isinstance(event.data, str)
        assert event.data


@settings(max_examples=20, deadline=None, database=None)
@given(depth=st.integers(1_000, MAX_RAW_LINE_BYTES // 2), bracket=st.sampled_from("[{"))
@example(depth=60_000, bracket="[")
def test_raw_line_deep_nesting_only_input_error(depth: int, bracket: str) -> None:
    line = bracket * depth if bracket == "[" else '{"a":' * depth
    assert _parse(line) is None


@settings(max_examples=20, deadline=None, database=None)
@given(digits=st.integers(310, 4000))
@example(digits=401)
def test_raw_line_huge_integer_rssi_only_input_error(digits: int) -> None:
    line = '{"kind":"tag","epc":"1F","rssi_dbm":1' + "0" * digits + "}"
    assert _parse(line) is None


@settings(max_examples=50, deadline=None, database=None)
@given(
    epc=st.sampled_from(["0x1F", "1_F", " 1F ", "+1F", "-1F", "0X3074"])
    | st.from_regex(r"\A[ _]?[0-9A-F]{1,8}(_[0-9A-F]{1,8})?[ ]?\Z")
)
@example(epc="1_F")
def test_raw_line_tag_epc_is_plain_hex(epc: str) -> None:
    event = _parse(json.dumps({"kind": "tag", "epc": epc}))
    assert event is None or (isinstance(event, TagRead) and HEX.issuperset(event.epc_hex))


# -- the scan framer ------------------------------------------------------------------------------

SLACK_BYTES = 4
noise = st.lists(
    st.binary(max_size=40)
    | st.sampled_from(
        [
            b"\r",
            b"\n",
            b"\r\n",
            b"\x1d",
            b"]C1",
            b"]d2",
            b"\xff",
            b"\xc3\xa9",
            b"\xe2\x82",
            b"\x00",
            b"\x7f",
            b"X" * 80,
        ]
    ),
    max_size=30,
).map(b"".join)


@FUZZ
@given(
    stream=noise,
    suffix=st.sampled_from(["CR", "LF", "CRLF", "ANY", "none"]),
    max_scan_bytes=st.integers(1, 64),
    cuts=st.lists(st.integers(0, 400), max_size=20),
    gaps_s=st.lists(st.floats(0.0, 0.3), min_size=1, max_size=20),
)
def test_framer_never_raises_and_stays_bounded(
    stream: bytes, suffix: Suffix, max_scan_bytes: int, cuts: list[int], gaps_s: list[float]
) -> None:
    framer = ScanFramer(suffix, max_scan_bytes=max_scan_bytes, inter_char_timeout_s=0.1)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    frames = []
    now_s = 0.0
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        now_s += gaps_s[index % len(gaps_s)]
        frames += framer.flush(now_s)
        frames += framer.feed(stream[start:end], now_s)
        assert framer.buffered_bytes <= max_scan_bytes + SLACK_BYTES
    frames += framer.flush(now_s + 1.0)
    assert framer.buffered_bytes <= max_scan_bytes + SLACK_BYTES
    scans = [frame for frame in frames if isinstance(frame, Scan)]
    assert len(scans) <= len(stream)
    for frame in frames:
        assert isinstance(frame, Scan | Rejected)
        if isinstance(frame, Rejected):
            assert frame.reason in {"too_long", "control_byte", "not_utf8"}
            continue
        raw = frame.data.encode("utf-8")  # a Scan is text that round-trips as UTF-8
        assert 0 < len(raw) <= max_scan_bytes
        assert all(byte == GS or (byte >= 0x20 and byte != 0x7F) for byte in raw)


@FUZZ
@given(stream=noise, cuts=st.lists(st.integers(0, 400), max_size=20))
def test_framer_gives_the_same_frames_however_the_bytes_are_split(
    stream: bytes, cuts: list[int]
) -> None:
    whole = ScanFramer("ANY", max_scan_bytes=32).feed(stream)
    framer = ScanFramer("ANY", max_scan_bytes=32)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    pieces = []
    for start, end in itertools.pairwise(bounds):
        pieces += framer.feed(stream[start:end])
    assert pieces == whole


def test_framer_memory_stays_flat_on_a_megabyte_without_terminator() -> None:
    framer = ScanFramer("CR", max_scan_bytes=4096)
    chunk = bytes(b for b in range(256) if b != 0x0D) * 16  # binary noise without the terminator
    for _ in range(256):  # 1 MiB in 4 KiB chunks
        assert framer.feed(chunk) == []
        assert framer.buffered_bytes <= 4096 + SLACK_BYTES
    assert framer.feed(b"\rOK\r") == [Rejected("too_long", 256 * len(chunk)), Scan("OK")]


# -- the keyboard-wedge decoder -------------------------------------------------------------------

known_codes = st.sampled_from(sorted(KEY_CODES.values()))
key_events = st.lists(
    st.tuples(known_codes | st.integers(-5, 800), st.sampled_from([0, 1, 2]) | st.integers(-3, 9)),
    max_size=120,
)
gs_keys = st.sampled_from(
    sorted(set(KEY_CODES) - {"KEY_ENTER", "KEY_KPENTER", "KEY_LEFTSHIFT", "KEY_RIGHTSHIFT"})
)


@FUZZ
@given(events=key_events, gs_key=gs_keys, max_scan_bytes=st.integers(1, 40))
def test_key_decoder_never_raises_and_stays_bounded(
    events: list[tuple[int, int]], gs_key: str, max_scan_bytes: int
) -> None:
    decoder = KeyDecoder(gs_key=gs_key, max_scan_bytes=max_scan_bytes)
    printable = set(string.printable) - set("\t\n\r\x0b\x0c") | {"\x1d"}
    for code, value in [*events, (KEY_CODES["KEY_ENTER"], 1)]:
        frame = decoder.feed(code, value)
        assert decoder.buffered_chars <= max_scan_bytes
        if frame is None:
            continue
        if isinstance(frame, Rejected):
            assert frame.reason in {"unknown_key", "too_long"}
            continue
        assert isinstance(frame, Scan)
        assert 0 < len(frame.data) <= max_scan_bytes
        assert set(frame.data) <= printable
    assert decoder.buffered_chars == 0  # Enter ended whatever was pending
