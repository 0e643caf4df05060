"""The scan framer: suffixes, AIM prefixes, GS, bounds, rejections, and chunking invariance."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.readers.framing import Frame, Rejected, Scan, ScanFramer, Suffix

GS1_WITH_GS = "]C1" + "0180614141123458" + "\x1d" + "21" + "6789"


@pytest.mark.parametrize(
    ("suffix", "stream", "expected"),
    [
        ("CR", b"ABC\r", [Scan("ABC")]),
        ("CR", b"ABC\rDEF\r", [Scan("ABC"), Scan("DEF")]),
        ("CR", b"ABC", []),
        ("CR", b"\r\r", []),
        ("CR", b"AB\nC\r", [Rejected("control_byte", 4)]),
        ("LF", b"ABC\n", [Scan("ABC")]),
        ("LF", b"ABC\r\n", [Rejected("control_byte", 4)]),
        ("CRLF", b"ABC\r\nDEF\r\n", [Scan("ABC"), Scan("DEF")]),
        ("CRLF", b"ABC\n", [Scan("ABC")]),
        ("CRLF", b"A\rB\r\n", [Rejected("control_byte", 2)]),
        ("ANY", b"ABC\r\nDEF\nGHI\r", [Scan("ABC"), Scan("DEF"), Scan("GHI")]),
        ("CR", (GS1_WITH_GS + "\r").encode(), [Scan(GS1_WITH_GS)]),
        ("CR", b"]d2010614141123458\r", [Scan("]d2010614141123458")]),
        (
            "CR",
            b"]Q3https://id.gs1.org/01/09506000134352\r",
            [Scan("]Q3https://id.gs1.org/01/09506000134352")],
        ),
        (
            "CR",
            b"]e0RMA-000123\r]E04006381333931\r",
            [Scan("]e0RMA-000123"), Scan("]E04006381333931")],
        ),
        ("CR", b"A\x00B\r", [Rejected("control_byte", 3)]),
        ("CR", b"A\x7fB\r", [Rejected("control_byte", 3)]),
        ("CR", b"A\xffB\r", [Rejected("not_utf8", 3)]),
        ("CR", "caf\u00e9\r".encode(), [Scan("caf\u00e9")]),
        ("CR", b"X" * 65 + b"\rOK\r", [Rejected("too_long", 65), Scan("OK")]),
        ("CR", b"X" * 64 + b"\r", [Scan("X" * 64)]),
        ("CRLF", b"X" * 64 + b"\r\n", [Scan("X" * 64)]),
    ],
)
def test_frames(suffix: Suffix, stream: bytes, expected: list[Frame]) -> None:
    framer = ScanFramer(suffix, max_scan_bytes=64)
    assert framer.feed(stream) == expected


def test_overlong_line_is_discarded_not_buffered() -> None:
    framer = ScanFramer("CR", max_scan_bytes=64)
    peak = 0
    for _ in range(1000):
        assert framer.feed(b"\x00garbage" * 16) == []
        peak = max(peak, framer.buffered_bytes)
    assert peak <= 64
    assert framer.feed(b"\rGOOD\r") == [Rejected("too_long", 128_000), Scan("GOOD")]
    assert framer.buffered_bytes == 0


def test_suffix_none_ends_on_inter_character_timeout() -> None:
    framer = ScanFramer("none", max_scan_bytes=64, inter_char_timeout_s=0.1)
    assert framer.feed(b"]C1012", now_s=10.0) == []
    assert framer.deadline_s() == pytest.approx(10.1)
    assert framer.feed(b"345", now_s=10.05) == []
    assert framer.flush(10.1) == []
    assert framer.flush(10.16) == [Scan("]C1012345")]
    assert framer.deadline_s() is None
    # A chunk arriving after the gap first closes the previous scan.
    assert framer.feed(b"AAA", now_s=20.0) == []
    assert framer.feed(b"BBB", now_s=21.0) == [Scan("AAA")]
    assert framer.flush(21.2) == [Scan("BBB")]


def test_suffix_none_rejects_overlong_and_binary() -> None:
    framer = ScanFramer("none", max_scan_bytes=16, inter_char_timeout_s=0.1)
    framer.feed(b"Y" * 40, now_s=1.0)
    assert framer.buffered_bytes <= 16
    assert framer.flush(2.0) == [Rejected("too_long", 40)]
    framer.feed(b"A\x01", now_s=3.0)
    assert framer.flush(4.0) == [Rejected("control_byte", 2)]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_scan_bytes"):
        ScanFramer("CR", max_scan_bytes=0)
    with pytest.raises(ValueError, match="inter_char_timeout_s"):
        ScanFramer("none", inter_char_timeout_s=0)


_LINES = st.one_of(
    st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ]-\x1d", min_size=0, max_size=40),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, start = [], 0
    for point in points:
        chunks.append(data[start:point])
        start = point
    chunks.append(data[start:])
    return chunks


@settings(max_examples=200, deadline=None)
@given(
    suffix=st.sampled_from(["CR", "LF", "CRLF", "ANY"]),
    lines=st.lists(_LINES, max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_same_frames_whatever_the_chunking(
    suffix: Suffix, lines: list[str], cuts: list[int]
) -> None:
    terminator = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n", "ANY": b"\r\n"}[suffix]
    data = b"".join(line.encode("latin-1") + terminator for line in lines)
    whole = ScanFramer(suffix, max_scan_bytes=24).feed(data)
    framer = ScanFramer(suffix, max_scan_bytes=24)
    pieces: list[Frame] = []
    for chunk in _split(data, cuts):
        pieces.extend(framer.feed(chunk))
        assert framer.buffered_bytes <= 24
    assert pieces == whole
    one_by_one = ScanFramer(suffix, max_scan_bytes=24)
    singles = [frame for byte in data for frame in one_by_one.feed(bytes([byte]))]
    assert singles == whole


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(st.text(alphabet="0123456789]C\x1d", min_size=1, max_size=20), max_size=10),
    cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=10),
)
def test_suffix_none_same_scans_whatever_the_chunking_within_a_burst(
    lines: list[str], cuts: list[int]
) -> None:
    # Without a suffix, each scan is one burst; the bursts are separated by more than the timeout.
    whole: list[Frame] = []
    split: list[Frame] = []
    a = ScanFramer("none", max_scan_bytes=16, inter_char_timeout_s=0.1)
    b = ScanFramer("none", max_scan_bytes=16, inter_char_timeout_s=0.1)
    for index, line in enumerate(lines):
        now_s = float(index)
        whole.extend(a.feed(line.encode(), now_s=now_s))
        for chunk in _split(line.encode(), cuts):
            split.extend(b.feed(chunk, now_s=now_s))
    whole.extend(a.flush(float(len(lines)) + 1))
    split.extend(b.flush(float(len(lines)) + 1))
    assert split == whole
    assert [f for f in whole if isinstance(f, Scan)] == [
        Scan(line) for line in lines if len(line) <= 16
    ]
