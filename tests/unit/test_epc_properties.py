"""Round trips: tests encode SGTIN-96, SSCC-96 and GRAI-96 (TDS layouts), the product decodes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.epc import decode_epc, decode_epc_bank, decode_epc_or_raw, describe_epc
from gateway.errors import ParseError

SETTINGS = settings(max_examples=300, deadline=None)
# Every partition value gets its own examples, not just whatever hypothesis happens to draw.
PER_PARTITION = settings(max_examples=60, deadline=None)
PARTITIONS = pytest.mark.parametrize("partition", range(7))


def gs1_check_digit(digits: str) -> str:
    """GS1 mod-10: weights 3, 1, 3, ... from the rightmost digit."""
    weighted = sum(int(d) * (1 + 2 * ((len(digits) - i) % 2)) for i, d in enumerate(digits))
    return str((10 - weighted % 10) % 10)


def prefix_bits(digits: int) -> int:
    """Bits the TDS partition tables give a company prefix of this many digits."""
    return int(10**digits - 1).bit_length()


@dataclass(frozen=True)
class Encoded:
    hex: str
    filter: int
    partition: int
    prefix: str
    reference: str
    serial: int


def encode(header: int, filter_value: int, partition: int, fields: list[tuple[int, int]]) -> str:
    value, width = 0, 0
    for field_value, field_width in [(header, 8), (filter_value, 3), (partition, 3), *fields]:
        assert 0 <= field_value < 1 << field_width
        value, width = (value << field_width) | field_value, width + field_width
    assert width == 96
    return f"{value:024X}"


@st.composite
def keyed(
    draw: st.DrawFn, header: int, ref_digits_total: int, body_bits: int, partition: int
) -> Encoded:
    """Header, filter, partition, company prefix, reference, then a serial or reserved bits."""
    filter_value = draw(st.integers(0, 7))
    prefix_digits = 12 - partition
    ref_digits = ref_digits_total - prefix_digits
    c_bits = prefix_bits(prefix_digits)
    prefix = draw(st.integers(0, 10**prefix_digits - 1))
    reference = draw(st.integers(0, 10**ref_digits - 1))
    tail_bits = 96 - 14 - body_bits
    serial = draw(st.integers(0, (1 << tail_bits) - 1)) if header != 0x31 else 0
    hex_epc = encode(
        header,
        filter_value,
        partition,
        [(prefix, c_bits), (reference, body_bits - c_bits), (serial, tail_bits)],
    )
    return Encoded(
        hex_epc,
        filter_value,
        partition,
        str(prefix).zfill(prefix_digits),
        str(reference).zfill(ref_digits) if ref_digits else "",
        serial,
    )


# SGTIN: prefix + indicator/item ref = 13 digits in 44 bits, serial 38 bits.
@PARTITIONS
@PER_PARTITION
@given(data=st.data())
def test_sgtin96_round_trip(partition: int, data: st.DataObject) -> None:
    enc = data.draw(keyed(0x30, 13, 44, partition))
    epc = decode_epc(enc.hex)
    body = enc.reference[0] + enc.prefix + enc.reference[1:]
    gtin = body + gs1_check_digit(body)
    assert epc.scheme == "sgtin-96"
    assert (epc.filter, epc.partition, epc.company_prefix) == (
        enc.filter,
        enc.partition,
        enc.prefix,
    )
    assert epc.fields["gtin"] == gtin
    assert epc.fields["serial"] == str(enc.serial)
    assert epc.uri == f"urn:epc:id:sgtin:{enc.prefix}.{enc.reference}.{enc.serial}"
    assert (
        epc.tag_uri
        == f"urn:epc:tag:sgtin-96:{enc.filter}.{enc.prefix}.{enc.reference}.{enc.serial}"
    )
    assert epc.element_string == f"(01){gtin}(21){enc.serial}"


# SSCC: prefix + extension digit/serial ref = 17 digits in 58 bits, 24 reserved zero bits.
@PARTITIONS
@PER_PARTITION
@given(data=st.data())
def test_sscc96_round_trip(partition: int, data: st.DataObject) -> None:
    enc = data.draw(keyed(0x31, 17, 58, partition))
    epc = decode_epc(enc.hex)
    body = enc.reference[0] + enc.prefix + enc.reference[1:]
    sscc = body + gs1_check_digit(body)
    assert len(sscc) == 18
    assert epc.scheme == "sscc-96"
    assert (epc.filter, epc.partition, epc.company_prefix) == (
        enc.filter,
        enc.partition,
        enc.prefix,
    )
    assert epc.fields["sscc"] == sscc
    assert epc.uri == f"urn:epc:id:sscc:{enc.prefix}.{enc.reference}"
    assert epc.element_string == f"(00){sscc}"


# GRAI: prefix + asset type = 12 digits in 44 bits, serial 38 bits.
@PARTITIONS
@PER_PARTITION
@given(data=st.data())
def test_grai96_round_trip(partition: int, data: st.DataObject) -> None:
    enc = data.draw(keyed(0x33, 12, 44, partition))
    epc = decode_epc(enc.hex)
    body = "0" + enc.prefix + enc.reference
    grai = body + gs1_check_digit(body) + str(enc.serial)
    assert epc.scheme == "grai-96"
    assert (epc.filter, epc.partition, epc.company_prefix) == (
        enc.filter,
        enc.partition,
        enc.prefix,
    )
    assert epc.fields["grai"] == grai
    assert epc.uri == f"urn:epc:id:grai:{enc.prefix}.{enc.reference}.{enc.serial}"
    assert epc.element_string == f"(8003){grai}"


@SETTINGS
@given(st.integers(0, 6).flatmap(lambda p: keyed(0x30, 13, 44, p)), st.integers(1, 4))
def test_word_padding_changes_nothing(enc: Encoded, words: int) -> None:
    assert decode_epc(enc.hex + "0000" * words) == decode_epc(enc.hex)


HEX = "0123456789abcdefABCDEF"
HEADERS = [f"{h:02X}" for h in [*range(0x2C, 0x42), 0x00, 0xE2, 0xF7, 0xFF]]


@SETTINGS
@given(st.one_of(st.text(max_size=80), st.text(HEX, max_size=80)))
def test_decode_raises_only_parse_error_on_any_text(text: str) -> None:
    described = describe_epc(text)
    try:
        epc = decode_epc(text)
    except ParseError:
        assert described["valid"] is False
        assert described["error"]
    else:
        assert epc.uri.startswith("urn:epc:id:")
        assert described["valid"] is True


@SETTINGS
@given(st.sampled_from(HEADERS), st.text(HEX, max_size=70))
def test_known_headers_with_any_tail_decode_or_become_raw(header: str, tail: str) -> None:
    text = header + tail
    epc = decode_epc_or_raw(text)
    if epc.scheme == "raw":
        assert epc.uri == f"urn:epc:raw:{len(text) * 4}.x{text.upper()}"
    else:
        assert epc.uri.startswith(f"urn:epc:id:{epc.scheme.rsplit('-', 1)[0]}:")


@SETTINGS
@given(st.text("0123456789ABCDEF", min_size=4, max_size=4), st.text(HEX, max_size=80))
def test_epc_bank_raises_only_parse_error(pc_word: str, epc_hex: str) -> None:
    try:
        read = decode_epc_bank(pc_word, epc_hex)
    except ParseError:
        return
    assert read.tag_uri.startswith(("urn:epc:tag:", "urn:epc:raw:"))
