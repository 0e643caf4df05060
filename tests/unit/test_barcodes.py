"""Barcode parsing: every GS1 conformance vector, site patterns, check digits, robustness."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.barcodes import (
    DEFAULT_PATTERNS,
    Barcode,
    Patterns,
    describe_barcode,
    parse_barcode,
)
from gateway.errors import ConfigError, ParseError
from gateway.gs1 import BIIP_GS1

VECTORS_FILE = Path(__file__).resolve().parents[2].parent / "shared/conformance/gs1/barcodes.json"
SETTINGS = settings(max_examples=300, deadline=None)


def _vectors() -> list[Any]:
    if not VECTORS_FILE.is_file():
        return [pytest.param(None, id="conformance-data-missing")]
    document = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    assert document["count"] == len(document["vectors"])
    return [pytest.param(vector, id=vector["id"]) for vector in document["vectors"]]


def _as_scan(vector: dict[str, Any]) -> str:
    """The vector's input as a scanner would send it."""
    text: str = vector["input"]
    if vector["kind"] == "ai_raw" and text.startswith("^"):
        # The syntax engine's `^` is FNC1: leading = GS1-128 data, inside = GS separator.
        return "]C1" + text[1:].replace("^", "\x1d")
    return text


@pytest.mark.parametrize("vector", _vectors())
def test_conformance_vector(vector: dict[str, Any] | None) -> None:
    if vector is None:
        pytest.fail(f"conformance vectors not found at {VECTORS_FILE}")
    expected = vector["expected"]
    permit = bool(vector["options"].get("permit_zero_suppressed_gtin", False))
    scan = _as_scan(vector)
    if not expected["valid"]:
        with pytest.raises(ParseError) as caught:
            parse_barcode(scan, permit_zero_suppressed_gtin=permit, gs1=BIIP_GS1)
        assert caught.value.reason
        return
    barcode = parse_barcode(scan, permit_zero_suppressed_gtin=permit, gs1=BIIP_GS1)
    assert [list(pair) for pair in barcode.ais] == [
        [a["ai"], a["value"]] for a in expected.get("ais", [])
    ]
    if vector["kind"] == "check_digit":
        assert scan.zfill(14) == barcode.gtin or scan == barcode.sscc
        return
    if expected.get("symbology_identifier"):
        assert barcode.symbology == expected["symbology_identifier"]
    if "implied_gtin14" in expected:
        assert barcode.gtin == expected["implied_gtin14"]
        assert barcode.kind == "item"
    values = dict(barcode.ais)
    assert barcode.gtin == values.get("01", barcode.gtin)
    assert barcode.sscc == values.get("00")
    assert barcode.grai == values.get("8003")


def test_check_digit_vectors_agree_for_bare_digits() -> None:
    # Bare digit strings are how scanners without AIM identifiers send EAN/UPC and SSCC.
    assert parse_barcode("80614141123458", gs1=BIIP_GS1).gtin == "80614141123458"
    assert parse_barcode("416000336108", gs1=BIIP_GS1).gtin == "00416000336108"
    assert parse_barcode("123456789012345675", gs1=BIIP_GS1).kind == "container"


@pytest.mark.parametrize(
    ("scan", "kind", "value", "pattern"),
    [
        ("RMA-000123", "rma", "RMA-000123", "rma"),
        ("RMA-CLOSE", "rma-close", "RMA-CLOSE", "rma-close"),
        ("DISP-RESTOCK", "disposition", "RESTOCK", "disposition"),
        ("DISP-DONATE", "disposition", "DONATE", "disposition"),
        ("LOC-A-01-03", "location", "LOC-A-01-03", "location"),
        ("]C0RMA-77", "rma", "RMA-77", "rma"),
        ("]A0LOC-B2", "location", "LOC-B2", "location"),
        ("]Q1DISP-REPAIR", "disposition", "REPAIR", "disposition"),
        ("RMA-000123\r\n", "rma", "RMA-000123", "rma"),
    ],
)
def test_default_patterns(scan: str, kind: str, value: str, pattern: str) -> None:
    barcode = parse_barcode(scan, gs1=BIIP_GS1)
    assert (barcode.kind, barcode.value, barcode.pattern, barcode.ais) == (kind, value, pattern, ())


@pytest.mark.parametrize(
    "scan",
    ["rma-000123", "RMA-", "DISP-SELL", "LOC-", "XRMA-1", "RMA-1 ", "]C1RMA-1", "]E0RMA-1"],
)
def test_pattern_near_misses_are_rejected(scan: str) -> None:
    with pytest.raises(ParseError):
        parse_barcode(scan, gs1=BIIP_GS1)


def test_rma_close_wins_over_rma_label_even_when_both_match() -> None:
    patterns = Patterns.compile(rma=r"RMA-[A-Z0-9]+", rma_close=r"RMA-CLOSE")
    assert parse_barcode("RMA-CLOSE", patterns, gs1=BIIP_GS1).kind == "rma-close"
    assert parse_barcode("RMA-CLOSED", patterns, gs1=BIIP_GS1).kind == "rma"


def test_custom_patterns_and_a_bad_pattern() -> None:
    patterns = Patterns.compile(location=r"BIN\d{4}", disposition=r"D:(OK|SCRAP)")
    assert parse_barcode("BIN0042", patterns, gs1=BIIP_GS1).kind == "location"
    assert parse_barcode("D:SCRAP", patterns, gs1=BIIP_GS1).value == "SCRAP"
    with pytest.raises(ParseError):
        parse_barcode("LOC-A1", patterns, gs1=BIIP_GS1)
    with pytest.raises(ConfigError) as caught:
        Patterns.compile(rma="RMA-(")
    assert caught.value.key == "patterns.rma"


def test_gs1_location_with_extension() -> None:
    barcode = parse_barcode("]C14149520123456788\x1d25432a/b", gs1=BIIP_GS1)
    assert (barcode.kind, barcode.gln, barcode.gln_extension) == (
        "location",
        "9520123456788",
        "32a/b",
    )
    assert parse_barcode("(414)0614141123452", gs1=BIIP_GS1).gln == "0614141123452"


@pytest.mark.parametrize(
    ("scan", "expected"),
    [
        (
            "]C101806141411234581725120010LOT7\x1d216789",
            Barcode(
                kind="item",
                raw="]C101806141411234581725120010LOT7\x1d216789",
                symbology="]C1",
                value="01806141411234581725120010LOT7\x1d216789",
                ais=(("01", "80614141123458"), ("17", "251200"), ("10", "LOT7"), ("21", "6789")),
                gtin="80614141123458",
                serial="6789",
                batch="LOT7",
                expiry="2025-12-31",
            ),
        ),
        (
            "]d200106141412345678908",
            Barcode(
                kind="container",
                raw="]d200106141412345678908",
                symbology="]d2",
                value="00106141412345678908",
                ais=(("00", "106141412345678908"),),
                sscc="106141412345678908",
            ),
        ),
        (
            "]C18003006141411234525678",
            Barcode(
                kind="item",
                raw="]C18003006141411234525678",
                symbology="]C1",
                value="8003006141411234525678",
                ais=(("8003", "006141411234525678"),),
                grai="006141411234525678",
            ),
        ),
        (
            "]Q3800406141415678",
            Barcode(
                kind="item",
                raw="]Q3800406141415678",
                symbology="]Q3",
                value="800406141415678",
                ais=(("8004", "06141415678"),),
                giai="06141415678",
            ),
        ),
    ],
)
def test_identifiers_are_extracted(scan: str, expected: Barcode) -> None:
    assert parse_barcode(scan, gs1=BIIP_GS1) == expected


@pytest.mark.parametrize(
    ("scan", "reason"),
    [
        ("]C1018061414112345810ABCDEFGHIJKLMNOPQRSTU216789", "AI (10) value is too long"),
        ("]C1018061414112345810ABC\x1d", "ends with an FNC1"),
        ("]C1018061414112345831030001233102000456", "invalid to pair AI (3103)"),
        ("]C1018061414112345810A\x1d10B", "AI (10) appears twice"),
        ("]C1254ABC", "required AIs for AI (254)"),
        ("]C18003102112345678900", "(zero)"),
        ("]e00180614141123459", "AI (01): the numeric check digit is incorrect"),
        ("]C1018061414112345817250230", "AI (17): the date contains an illegal day"),
        ("]Q1https://id.gs1.org/01/80614141123458?4326=250230", "AI (4326)"),
        ("(01)80614141123458(10)", "AI (10) value is too short"),
        ("(01)80614141123458 (10)A", "AI (01)"),
    ],
)
def test_strictness_reasons_name_the_ai_and_rule(scan: str, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_barcode(scan, gs1=BIIP_GS1)
    assert reason in caught.value.reason


def test_describe_barcode_shapes() -> None:
    good = describe_barcode("]C10180614141123458216789", gs1=BIIP_GS1)
    assert good["valid"] is True
    assert good["kind"] == "item"
    assert good["ais"] == {"01": "80614141123458", "21": "6789"}
    assert good["pattern"] is None
    assert {"input", "symbology", "gtin", "serial", "batch", "expiry", "sscc", "grai"} <= set(good)
    rma = describe_barcode("RMA-9", gs1=BIIP_GS1)
    assert (rma["pattern"], rma["ais"]) == ("rma", {})
    bad = describe_barcode("]C10180614141123459", gs1=BIIP_GS1)
    assert set(bad) == {"input", "valid", "error"}
    assert bad["valid"] is False
    assert "check digit" in str(bad["error"])
    assert describe_barcode("nothing", gs1=BIIP_GS1)["error"] == "unrecognised barcode"


def _gs1_check_digit(payload: str) -> str:
    """Independent mod-10: weights 3,1,3,... from the right of the payload."""
    weights = [3 if i % 2 == 0 else 1 for i in range(len(payload))]
    total = sum(int(d) * w for d, w in zip(reversed(payload), weights, strict=True))
    return str(-total % 10)


@SETTINGS
@given(
    payload=st.integers(min_value=7, max_value=13).flatmap(
        lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n)
    )
)
def test_gtin_check_digits_round_trip(payload: str) -> None:
    if len(payload) + 1 not in {8, 12, 13, 14}:
        payload = payload.zfill(13)
    right = _gs1_check_digit(payload)
    assert parse_barcode(payload + right, gs1=BIIP_GS1).gtin == (payload + right).zfill(14)
    assert parse_barcode("]C101" + (payload + right).zfill(14), gs1=BIIP_GS1).gtin == (
        payload + right
    ).zfill(14)
    for wrong in "0123456789":
        if wrong != right:
            with pytest.raises(ParseError, match="check digit"):
                parse_barcode(payload + wrong, gs1=BIIP_GS1)
            with pytest.raises(ParseError, match="check digit"):
                parse_barcode("]C101" + (payload + wrong).zfill(14), gs1=BIIP_GS1)


@SETTINGS
@given(payload=st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_sscc_check_digits_round_trip(payload: str) -> None:
    right = _gs1_check_digit(payload)
    assert parse_barcode("]C100" + payload + right, gs1=BIIP_GS1).sscc == payload + right
    assert parse_barcode(payload + right, gs1=BIIP_GS1).kind == "container"
    for wrong in "0123456789":
        if wrong != right:
            with pytest.raises(ParseError, match="check digit"):
                parse_barcode("]C100" + payload + wrong, gs1=BIIP_GS1)


_PREFIXES = ["", "]C1", "]e0", "]d2", "]Q3", "]E0", "]E4", "]Q1", "]d1", "]C0", "]XX", "]", "("]
_PIECES = [
    "01",
    "00",
    "10",
    "21",
    "17",
    "414",
    "254",
    "8003",
    "8004",
    "3103",
    "8013",
    "4300",
    "\x1d",
    "^",
    "(",
    ")",
    "%",
    "%2",
    "?",
    "&",
    "=",
    "#",
    "+",
    "https://a/01/",
    "http://[/00/",
    "09520123456788",
]


@SETTINGS
@given(
    prefix=st.sampled_from(_PREFIXES),
    body=st.lists(
        st.one_of(st.sampled_from(_PIECES), st.text(min_size=0, max_size=8)), max_size=8
    ).map("".join),
)
def test_parse_barcode_raises_only_parse_error(prefix: str, body: str) -> None:
    reason = ""
    try:
        barcode = parse_barcode(prefix + body, gs1=BIIP_GS1)
    except ParseError as exc:
        reason = exc.reason
    described = describe_barcode(prefix + body, gs1=BIIP_GS1)
    if reason:
        assert described == {"input": prefix + body, "valid": False, "error": reason}
    else:
        assert barcode.raw == prefix + body
        assert described["valid"] is True


@SETTINGS
@given(text=st.text(max_size=40))
def test_describe_never_raises(text: str) -> None:
    described = describe_barcode(text, gs1=BIIP_GS1)
    assert described["input"] == text
    assert isinstance(described["valid"], bool)


def test_default_patterns_are_the_documented_ones() -> None:
    assert DEFAULT_PATTERNS.rma.pattern == "^RMA-[0-9A-Z]+$"
    assert DEFAULT_PATTERNS.rma_close.pattern == "^RMA-CLOSE$"
    assert DEFAULT_PATTERNS.location.pattern == "^LOC-[0-9A-Z-]+$"
    assert DEFAULT_PATTERNS.disposition.pattern == "^DISP-(RESTOCK|REPAIR|RECYCLE|DISPOSE|DONATE)$"
