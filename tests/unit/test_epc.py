"""EPC TDS 1.13 decoding against every vector in conformance/gs1/epc.json, plus table tests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.epc import (
    Epc,
    NotAnEpc,
    decode_epc,
    decode_epc_bank,
    decode_epc_or_raw,
    decode_pc_word,
    describe_epc,
    raw_uri,
)
from gateway.errors import InputError, ParseError

EPC_JSON = Path(__file__).resolve().parents[2].parent / "shared/conformance/gs1/epc.json"


def _load() -> dict[str, Any]:
    # Collection must not crash without the data; test_vector_file_is_complete fails instead.
    if not EPC_JSON.is_file():
        return {"vectors": [], "gen2_epc_bank_vectors": []}
    data: dict[str, Any] = json.loads(EPC_JSON.read_text(encoding="utf-8"))
    return data


DATA = _load()
VALID = [v for v in DATA["vectors"] if v["valid"] and "tds_version" not in v]
REJECT = [v for v in DATA["vectors"] if not v["valid"]]
PLUS = [v for v in DATA["vectors"] if v.get("tds_version") == "2.x"]
GEN2 = DATA["gen2_epc_bank_vectors"]

# Vector keys that name Epc attributes; every other expected key is a scheme field.
ATTRIBUTES = {
    "scheme": "scheme",
    "filter": "filter",
    "partition": "partition",
    "company_prefix": "company_prefix",
    "tag_uri": "tag_uri",
    "pure_identity_uri": "uri",
    "gs1_element_string": "element_string",
}


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["id"] for v in vectors]


def test_vector_file_is_complete(conformance: Path) -> None:
    data = json.loads((conformance / "gs1" / "epc.json").read_text(encoding="utf-8"))
    assert len(data["vectors"]) == data["count"] == 77
    assert (len(VALID), len(REJECT), len(PLUS), len(GEN2)) == (54, 18, 5, 9)


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_valid_vector_decodes_to_every_expected_field(vector: dict[str, Any]) -> None:
    epc = decode_epc(vector["hex"])
    described = describe_epc(vector["hex"])
    assert described["valid"] is True
    for key, expected in vector["expected"].items():
        if key in ATTRIBUTES:
            assert getattr(epc, ATTRIBUTES[key]) == expected, key
            shown = "uri" if key == "pure_identity_uri" else ATTRIBUTES[key]
            assert described[shown] == expected, key
        else:
            assert epc.fields[key] == expected, key
            assert described[key] == expected, key


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_valid_vector_cuts_word_padding_to_the_scheme_length(vector: dict[str, Any]) -> None:
    epc = decode_epc(vector["hex"])
    length = {"sgtin-198": 198, "sgln-195": 195, "grai-170": 170, "giai-202": 202}
    assert epc.bits == length.get(epc.scheme, 96 if epc.scheme != "gdti-174" else 174)
    # Another word of padding (and any case, prefix, whitespace) changes nothing.
    padded = decode_epc(f"  0x{vector['hex'].lower()}0000\n")
    assert padded == epc


def _shape(message: str) -> str:
    # "serial ref 10^10 >= 10^10" in the file stands for the number 10000000000.
    return re.sub(r"[0-9^]+", "N", message)


@pytest.mark.parametrize("vector", REJECT, ids=_ids(REJECT))
def test_must_reject_vector_is_rejected_with_its_reason(vector: dict[str, Any]) -> None:
    with pytest.raises(ParseError) as caught:
        decode_epc(vector["hex"])
    assert isinstance(caught.value, InputError)
    assert _shape(vector["expected_error"]) in _shape(caught.value.reason)
    described = describe_epc(vector["hex"])
    assert described["valid"] is False
    assert described["error"] == caught.value.reason
    assert "uri" not in described
    assert "scheme" not in described


@pytest.mark.parametrize("vector", REJECT, ids=_ids(REJECT))
def test_must_reject_vector_keeps_a_raw_identity_when_it_is_hex(vector: dict[str, Any]) -> None:
    if vector["id"] == "inv-non-hex":
        with pytest.raises(ParseError):
            decode_epc_or_raw(vector["hex"])
        assert "raw_uri" not in describe_epc(vector["hex"])
        return
    bits = len(vector["hex"]) * 4
    expected = f"urn:epc:raw:{bits}.x{vector['hex']}"
    raw = decode_epc_or_raw(vector["hex"])
    assert (raw.scheme, raw.uri, raw.bits, raw.tag_uri) == ("raw", expected, bits, None)
    assert describe_epc(vector["hex"])["raw_uri"] == expected


NOT_EPC = [v for v in REJECT if "not an EPC" in v["expected_error"]]


@pytest.mark.parametrize("vector", NOT_EPC, ids=_ids(NOT_EPC))
def test_tid_unprogrammed_and_unknown_headers_raise_not_an_epc(vector: dict[str, Any]) -> None:
    with pytest.raises(NotAnEpc) as caught:
        decode_epc(vector["hex"])
    assert caught.value.raw_uri == vector["expected_error"].rsplit(" ", 1)[1]


@pytest.mark.parametrize("vector", PLUS, ids=_ids(PLUS))
def test_tds2x_plus_scheme_is_refused_never_misread(vector: dict[str, Any]) -> None:
    with pytest.raises(NotAnEpc) as caught:
        decode_epc(vector["hex"])
    assert "TDS 2.x" in caught.value.reason
    assert vector["expected"]["scheme"] in caught.value.reason
    raw = decode_epc_or_raw(vector["hex"])
    assert raw.scheme == "raw"
    assert raw.uri == f"urn:epc:raw:{len(vector['hex']) * 4}.x{vector['hex']}"
    described = describe_epc(vector["hex"])
    assert described["valid"] is False
    assert "uri" not in described


@pytest.mark.parametrize("vector", GEN2, ids=_ids(GEN2))
def test_gen2_header_word_vector(vector: dict[str, Any]) -> None:
    expected = vector["expected"]
    assert decode_pc_word(vector["pc_word"]) == expected["pc"]
    read = decode_epc_bank(vector["pc_word"], vector["epc_hex"], vector["xpc_w1"])
    assert dict(read.pc) == expected["pc"]
    assert read.tag_uri == expected.get("tag_uri", expected.get("raw_uri"))
    assert read.uri == expected["pure_identity_uri"]
    if "raw_uri" in expected:
        assert read.epc.scheme == "raw"
        assert read.error is not None
    else:
        assert read.epc.uri == expected["pure_identity_uri"]
        assert read.error is None


# TDS Appendix E examples for schemes the conformance file has no vector for, as transcribed in
# dannyhaak/TagDataTranslation's TDSStandard tests (hex cut to the scheme length there).
TDS_EXAMPLES = [
    (
        "3D74257BF75411DEF6B4CC00000003039",
        "urn:epc:tag:cpi-var:3.0614141.5PQ7%2FZ43.12345",
        "urn:epc:id:cpi:0614141.5PQ7%2FZ43.12345",
        "(8010)06141415PQ7/Z43(8011)12345",
    ),
    (
        "2F320434147455900000162E",
        "urn:epc:tag:usdod-96:3.CAGEY.5678",
        "urn:epc:id:usdod:CAGEY.5678",
        None,
    ),
    (
        "3B0E0CF5E76C9047759AD00373DC7602E7200",
        "urn:epc:tag:adi-var:3.35962.PQ7VZ4.M37GXB92",
        "urn:epc:id:adi:35962.PQ7VZ4.M37GXB92",
        None,
    ),
    (
        "4074F4E4E40C0E40820000000F6C",
        "urn:epc:tag:itip-110:3.4012345.012345.01.02.987",
        "urn:epc:id:itip:4012345.012345.01.02.987",
        "(8006)040123451234560102(21)987",
    ),
    (
        "4174F4E4E40C0E4082DBDD8B36600000000000000000000000000000",
        "urn:epc:tag:itip-212:3.4012345.012345.01.02.mw133",
        "urn:epc:id:itip:4012345.012345.01.02.mw133",
        "(8006)040123451234560102(21)mw133",
    ),
]


@pytest.mark.parametrize(("hex_epc", "tag_uri", "uri", "element"), TDS_EXAMPLES)
def test_tds_example_of_scheme_outside_the_file(
    hex_epc: str, tag_uri: str, uri: str, element: str | None
) -> None:
    epc = decode_epc(hex_epc)
    assert (epc.tag_uri, epc.uri, epc.element_string) == (tag_uri, uri, element)


def _pack(*fields: tuple[int, int]) -> str:
    """(value, width) fields, MSB first, padded with zeros to whole 16-bit words, as hex."""
    value, width = 0, 0
    for field_value, field_width in fields:
        assert field_value < 1 << field_width
        value, width = value << field_width | field_value, width + field_width
    padding = -width % 16
    return f"{value << padding:0{(width + padding) // 4}X}"


def test_gdti113_numeric_string_serial_keeps_leading_zeros() -> None:
    # header, filter 3, partition 5, company prefix 0614141 (24 bits), document type 12345,
    # serial "0005678" as the numeric string "1" + digits in 58 bits.
    hex_epc = _pack((0x3A, 8), (3, 3), (5, 3), (614141, 24), (12345, 17), (10005678, 58))
    epc = decode_epc(hex_epc)
    assert epc.scheme == "gdti-113"
    assert epc.bits == 113
    assert epc.uri == "urn:epc:id:gdti:0614141.12345.0005678"
    assert epc.element_string == "(253)06141411234520005678"
    assert epc.fields["serial"] == "0005678"


def test_numeric_string_without_its_leading_one_is_rejected() -> None:
    hex_epc = _pack((0x3F, 8), (3, 3), (5, 3), (614141, 24), (12345, 17), (5678, 41))
    with pytest.raises(ParseError, match="'1'-prefixed"):
        decode_epc(hex_epc)


def test_sgln_extension_zero_is_the_plain_gln() -> None:
    hex_epc = _pack((0x32, 8), (3, 3), (5, 3), (614141, 24), (12345, 17), (0, 41))
    epc = decode_epc(hex_epc)
    assert epc.uri == "urn:epc:id:sgln:0614141.12345.0"
    assert epc.element_string == "(414)0614141123452"
    assert dict(epc.fields) == {"gln": "0614141123452", "extension": "0"}


def test_sgtin96_serial_is_decimal_without_leading_zeros() -> None:
    hex_epc = _pack((0x30, 8), (1, 3), (5, 3), (614141, 24), (812345, 20), (7, 38))
    assert decode_epc(hex_epc).fields["serial"] == "7"


def test_adi_serial_hash_only_in_first_position() -> None:
    def six(text: str) -> list[tuple[int, int]]:
        return [(ord(c) & 0x3F, 6) for c in text] + [(0, 6)]

    cage = [(ord(c) & 0x3F, 6) for c in "35962"]
    base = [(0x3B, 8), (3, 6), (0x20, 6), *cage, *six("PQ7")]
    epc = decode_epc(_pack(*base, *six("#A1")))
    assert epc.uri == "urn:epc:id:adi:35962.PQ7.%23A1"
    with pytest.raises(ParseError, match="'#'"):
        decode_epc(_pack(*base, *six("A#1")))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty input"),
        ("   ", "empty input"),
        ("0x", "empty input"),
        ("30 74", "not hexadecimal"),
        ("3074257BF7194E4000001A8G", "not hexadecimal"),
        ("é", "not hexadecimal"),
        ("30", "too few bits"),
        ("3D74", "too few bits"),
        ("3B", "too few bits"),
        ("3674257BF7194E5B3770E4", "too few bits"),
        ("3", "too few bits"),
        ("30" * 129, "more than any EPC bank"),
    ],
)
def test_bad_input_is_a_parse_error_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        decode_epc(text)
    described = describe_epc(text)
    assert described["valid"] is False
    assert reason in str(described["error"])


def test_decoded_epc_is_cached_shared_and_read_only() -> None:
    first = decode_epc("3074257BF7194E4000001A85")
    assert decode_epc("3074257BF7194E4000001A85") is first
    with pytest.raises(TypeError):
        first.fields["gtin"] = "0"  # type: ignore[index]
    assert hash(first) == hash(decode_epc("3074257BF7194E4000001A85"))
    assert isinstance(first, Epc)


def test_describe_epc_is_flat_and_ordered_for_the_cli() -> None:
    described = describe_epc("3074257BF7194E4000001A85")
    assert list(described) == [
        "input",
        "valid",
        "scheme",
        "uri",
        "tag_uri",
        "filter",
        "partition",
        "company_prefix",
        "gtin",
        "serial",
        "element_string",
        "bits",
    ]
    json.dumps(described)


def test_raw_uri_of_hex_input() -> None:
    assert raw_uri(" 0xe2801160 ") == "urn:epc:raw:32.xE2801160"
    with pytest.raises(ParseError):
        raw_uri("xyz")


def test_epc_bank_falls_back_to_raw_for_an_invalid_epc() -> None:
    read = decode_epc_bank("3000", "307C257BF7194E4000001A85")
    assert read.tag_uri == "urn:epc:raw:96.x307C257BF7194E4000001A85"
    assert read.error is not None
    assert "invalid partition 7" in read.error


def test_epc_bank_ignores_words_beyond_the_pc_length() -> None:
    read = decode_epc_bank("3000", "3074257BF7194E4000001A85FFFF")
    assert read.uri == "urn:epc:id:sgtin:0614141.812345.6789"


def test_epc_bank_without_xpc_word_leaves_the_xpc_control_out() -> None:
    read = decode_epc_bank("3200", "3074257BF7194E4000001A85")
    assert read.tag_uri == "urn:epc:tag:sgtin-96:3.0614141.812345.6789"


@pytest.mark.parametrize(
    ("pc_word", "epc_hex", "xpc", "reason"),
    [
        ("300", "3074257BF7194E4000001A85", None, "PC word is 4 hex digits"),
        ("3000", "3074257BF7194E40", None, "the PC word says 96"),
        ("0000", "", None, "0 words"),
        ("3200", "3074257BF7194E4000001A85", "04", "XPC is 4 or 8"),
    ],
)
def test_epc_bank_bad_input(pc_word: str, epc_hex: str, xpc: str | None, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        decode_epc_bank(pc_word, epc_hex, xpc)


def test_epc_bank_refuses_a_tds2x_plus_header_by_name() -> None:
    read = decode_epc_bank("3800", "F73795211411234538566CB0AFC40000")
    assert read.epc.scheme == "raw"
    assert read.tag_uri == "urn:epc:raw:112.xF73795211411234538566CB0AFC4"
    assert read.error is not None
    assert "TDS 2.x scheme SGTIN+" in read.error
