"""EPC Tag Data Standard 1.13 binary decoding: EPC bank hex in, identity URIs and GS1 keys out.

`decode_epc` is strict (TDS 1.13 section 14.4): anything that is not a TDS 1.13 EPC raises
`ParseError`; headers that are no EPC at all (a TID, an unprogrammed bank, an unknown or a TDS 2.x
"+" header) raise its subclass `NotAnEpc`, whose `raw_uri` names the read so that it is not lost.
`decode_epc_or_raw` and `decode_epc_bank` (section 15.2.4, with the Gen2 PC word) fall back to
that raw identity instead of raising.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.errors import ParseError

WHAT = "EPC"


@dataclass(frozen=True, slots=True)
class Epc:
    """One decoded EPC; `uri` is the pure-identity URI, or `urn:epc:raw:...` for scheme "raw"."""

    scheme: str
    uri: str
    tag_uri: str | None
    filter: int | None
    partition: int | None
    company_prefix: str | None
    # A read-only mapping: decode_epc is cached, so one Epc is shared by many callers.
    fields: Mapping[str, str] = field(hash=False)
    element_string: str | None
    bits: int


class NotAnEpc(ParseError):
    """No TDS 1.13 EPC here (TID, unprogrammed, unknown or TDS 2.x header): keep `raw_uri`."""

    def __init__(self, reason: str, raw_uri: str) -> None:
        super().__init__(WHAT, f"{reason}; report as {raw_uri}")
        self.raw_uri = raw_uri


@dataclass(frozen=True, slots=True)
class EpcBankRead:
    """A Gen2 EPC bank decoded with its PC word (TDS 15.2.4): `tag_uri` is a tag or raw URI."""

    pc: Mapping[str, int] = field(hash=False)
    epc: Epc
    tag_uri: str
    uri: str
    error: str | None


@functools.lru_cache(maxsize=8192)
def decode_epc(hex_epc: str) -> Epc:
    """Decode EPC bank hex (word padding allowed) per TDS 1.13; raise ParseError if it is no EPC."""
    # No whole-byte rule: TDS examples give e.g. SGLN-195 as 49 hex digits, 196 bits.
    digits = _hex_digits(hex_epc)
    return _decode_bits(int(digits, 16), len(digits) * 4, digits)


def decode_epc_or_raw(hex_epc: str) -> Epc:
    """Decode like decode_epc, but return scheme "raw" for anything hex that is not a valid EPC."""
    try:
        return decode_epc(hex_epc)
    except ParseError:
        digits = _hex_digits(hex_epc)
        return _raw_epc(digits, len(digits) * 4)


def raw_uri(hex_epc: str) -> str:
    """The TDS raw URI (`urn:epc:raw:<bits>.x<HEX>`) of hex input; ParseError if it is not hex."""
    digits = _hex_digits(hex_epc)
    return _raw(len(digits) * 4, digits)


def describe_epc(text: str) -> dict[str, object]:
    """The JSON object `gateway decode epc` prints for one input; never raises."""
    try:
        epc = decode_epc(text)
    except ParseError as exc:
        out: dict[str, object] = {"input": text, "valid": False, "error": exc.reason}
        # Input that is not hex at all has no raw identity to offer.
        with contextlib.suppress(ParseError):
            out["raw_uri"] = raw_uri(text)
        return out
    described: dict[str, object] = {
        "input": text,
        "valid": True,
        "scheme": epc.scheme,
        "uri": epc.uri,
        "tag_uri": epc.tag_uri,
        "filter": epc.filter,
        "partition": epc.partition,
        "company_prefix": epc.company_prefix,
    }
    described.update(epc.fields)
    described["element_string"] = epc.element_string
    described["bits"] = epc.bits
    return described


def decode_pc_word(hex_word: str) -> dict[str, object]:
    """Split a Gen2 PC word: length_words, umi, xi, toggle, attribute_bits (T=0) or afi (T=1)."""
    return dict(_pc_fields(_pc_value(hex_word)))


def decode_epc_bank(pc_word: str, epc_hex: str, xpc_w1: str | None = None) -> EpcBankRead:
    """Decode an EPC bank from bit 20h with its PC word (TDS 15.2.4); not an EPC -> raw URI."""
    word = _pc_value(pc_word)
    pc = types.MappingProxyType(_pc_fields(word))
    length_bits = pc["length_words"] * 16
    if length_bits == 0:
        raise ParseError(WHAT, "PC word gives an EPC length of 0 words: the bank holds no EPC")
    digits = _hex_digits(epc_hex)
    if len(digits) * 4 < length_bits:
        raise ParseError(
            WHAT, f"EPC bank has {len(digits) * 4} bits, the PC word says {length_bits}"
        )
    digits = digits[: length_bits // 4]
    controls = _controls(pc, xpc_w1)
    prefix = f"{controls}:" if controls else ""
    if pc["toggle"]:
        uri = f"urn:epc:raw:{prefix}{length_bits}.x{pc['afi']:02X}.x{digits}"
        raw = Epc("raw", uri, None, None, None, None, _EMPTY, None, length_bits)
        return EpcBankRead(pc, raw, uri, uri, "toggle bit set: ISO 15961 AFI, not an EPC")
    try:
        epc = _decode_bits(int(digits, 16), length_bits, digits)
    except ParseError as exc:
        uri = f"urn:epc:raw:{prefix}{length_bits}.x{digits}"
        raw = Epc("raw", uri, None, None, None, None, _EMPTY, None, length_bits)
        return EpcBankRead(pc, raw, uri, uri, exc.reason)
    assert epc.tag_uri is not None
    tag_uri = epc.tag_uri.replace("urn:epc:tag:", f"urn:epc:tag:{prefix}", 1)
    return EpcBankRead(pc, epc, tag_uri, epc.uri, None)


# --- input ------------------------------------------------------------------------------------

_HEX = frozenset("0123456789ABCDEF")
# A Gen2 PC word can announce at most 31 words (496 bits); this leaves room for XPC and slack.
MAX_HEX_DIGITS = 256
_EMPTY: Mapping[str, str] = types.MappingProxyType({})


def _hex_digits(text: str) -> str:
    digits = text.strip().upper()
    digits = digits.removeprefix("0X")
    if not digits:
        raise ParseError(WHAT, "empty input: expected EPC hex digits")
    if not _HEX.issuperset(digits):
        bad = next(c for c in digits if c not in _HEX)
        raise ParseError(WHAT, f"not hexadecimal: {bad!r} in {text.strip()[:64]!r}")
    if len(digits) > MAX_HEX_DIGITS:
        raise ParseError(WHAT, f"{len(digits)} hex digits, more than any EPC bank holds")
    return digits


def _raw(bits: int, digits: str) -> str:
    return f"urn:epc:raw:{bits}.x{digits}"


def _raw_epc(digits: str, bits: int) -> Epc:
    return Epc("raw", _raw(bits, digits), None, None, None, None, _EMPTY, None, bits)


def _decode_bits(value: int, bits: int, digits: str) -> Epc:
    if bits < 8:
        raise ParseError(WHAT, f"too few bits: {bits}, not even an 8-bit header")
    header = value >> (bits - 8)
    decoder = _DECODERS.get(header)
    if decoder is None:
        plus = _PLUS_HEADERS.get(header)
        if plus is not None:
            reason = (
                f"header {header:02X} is the TDS 2.x scheme {plus}, which this TDS 1.13 "
                "decoder refuses rather than misread: not an EPC it can decode"
            )
            raise NotAnEpc(reason, _raw(bits, digits))
        name = _NOT_EPC.get(header, f"header {header:02X} is unknown in TDS 1.13")
        raise NotAnEpc(f"{name}: not an EPC", _raw(bits, digits))
    scheme, length, decode = decoder
    if bits < (length or _MIN_VAR_BITS[scheme]):
        needed = length or _MIN_VAR_BITS[scheme]
        raise ParseError(WHAT, f"too few bits: {scheme} needs {needed} bits, got {bits}")
    # Gen2 banks hold whole 16-bit words: what lies beyond the scheme's length is padding.
    return decode(value >> (bits - length) if length else value, length or bits)


# --- Gen2 PC word -------------------------------------------------------------------------


def _pc_value(hex_word: str) -> int:
    digits = _hex_digits(hex_word)
    if len(digits) != 4:
        raise ParseError(WHAT, f"a PC word is 4 hex digits, got {len(digits)}")
    return int(digits, 16)


def _pc_fields(word: int) -> dict[str, int]:
    pc = {
        "length_words": word >> 11,
        "umi": (word >> 10) & 1,
        "xi": (word >> 9) & 1,
        "toggle": (word >> 8) & 1,
    }
    pc["afi" if pc["toggle"] else "attribute_bits"] = word & 0xFF
    return pc


def _controls(pc: Mapping[str, int], xpc_w1: str | None) -> str:
    out = ""
    if not pc["toggle"] and pc["attribute_bits"]:
        out += f"[att=x{pc['attribute_bits']:02X}]"
    if pc["umi"]:
        out += "[umi=1]"
    # Readers often do not report XPC_W1; without it the control field is left out.
    if pc["xi"] and xpc_w1 is not None:
        xpc = _hex_digits(xpc_w1)
        if len(xpc) not in {4, 8}:
            raise ParseError(WHAT, f"XPC is 4 or 8 hex digits, got {len(xpc)}")
        out += f"[xpc=x{xpc}]"
    return out


# --- TDS 1.13 schemes ---------------------------------------------------------------------

_POW10 = tuple(10**n for n in range(32))

# Partition tables (TDS 14.5), per partition value:
# (company prefix bits, its digits, second field bits, its digits).
_Row = tuple[int, int, int, int]
_Table = tuple[_Row, ...]
_SGTIN: _Table = (
    (40, 12, 4, 1),
    (37, 11, 7, 2),
    (34, 10, 10, 3),
    (30, 9, 14, 4),
    (27, 8, 17, 5),
    (24, 7, 20, 6),
    (20, 6, 24, 7),
)
_SSCC: _Table = (
    (40, 12, 18, 5),
    (37, 11, 21, 6),
    (34, 10, 24, 7),
    (30, 9, 28, 8),
    (27, 8, 31, 9),
    (24, 7, 34, 10),
    (20, 6, 38, 11),
)
_SGLN: _Table = (
    (40, 12, 1, 0),
    (37, 11, 4, 1),
    (34, 10, 7, 2),
    (30, 9, 11, 3),
    (27, 8, 14, 4),
    (24, 7, 17, 5),
    (20, 6, 21, 6),
)
_GRAI: _Table = (
    (40, 12, 4, 0),
    (37, 11, 7, 1),
    (34, 10, 10, 2),
    (30, 9, 14, 3),
    (27, 8, 17, 4),
    (24, 7, 20, 5),
    (20, 6, 24, 6),
)
_GIAI96: _Table = (
    (40, 12, 42, 13),
    (37, 11, 45, 14),
    (34, 10, 48, 15),
    (30, 9, 52, 16),
    (27, 8, 55, 17),
    (24, 7, 58, 18),
    (20, 6, 62, 19),
)
_GIAI202: _Table = (
    (40, 12, 148, 18),
    (37, 11, 151, 19),
    (34, 10, 154, 20),
    (30, 9, 158, 21),
    (27, 8, 161, 22),
    (24, 7, 164, 23),
    (20, 6, 168, 24),
)
_CPI96: _Table = (
    (40, 12, 11, 3),
    (37, 11, 14, 4),
    (34, 10, 17, 5),
    (30, 9, 21, 6),
    (27, 8, 24, 7),
    (24, 7, 27, 8),
    (20, 6, 31, 9),
)
_CPIVAR: _Table = (
    (40, 12, 114, 18),
    (37, 11, 120, 19),
    (34, 10, 126, 20),
    (30, 9, 132, 21),
    (27, 8, 138, 22),
    (24, 7, 144, 23),
    (20, 6, 150, 24),
)

_NOT_EPC = {
    0x00: "header 00: unprogrammed tag",
    0xE2: "header E2: a tag TID (class E2) returned instead of an EPC",
}
_PLUS_HEADERS = {
    0xF0: "CPI+",
    0xF1: "GRAI+",
    0xF2: "SGLN+",
    0xF3: "ITIP+",
    0xF4: "GSRN+",
    0xF5: "GSRNP+",
    0xF6: "GDTI+",
    0xF7: "SGTIN+",
    0xF8: "SGCN+",
    0xF9: "SSCC+",
    0xFA: "GIAI+",
    0xFB: "DSGTIN+",
    0xFC: "DSGTIN++",
    0xFD: "SGTIN++",
    0xE6: "CPI++",
    0xE7: "GSRN++",
    0xE8: "GSRNP++",
    0xE9: "SGLN++",
    0xEA: "GDTI++",
    0xEB: "GRAI++",
    0xEC: "SGCN++",
    0xED: "ITIP++",
    0xEE: "GIAI++",
    0xEF: "SSCC++",
}

# Table A-1: the 82 characters of GS1 AI encodable set 82, and those escaped in URIs.
_CHARSET_82 = frozenset(
    "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
)
_URI_ESCAPES = {
    '"': "%22",
    "%": "%25",
    "&": "%26",
    "/": "%2F",
    "<": "%3C",
    ">": "%3E",
    "?": "%3F",
    "#": "%23",
}
# Table A-2 (6-bit, CPI-var and ADI-var): only these characters are allowed.
_CHARSET_6BIT = frozenset("#-/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _uri_escape(text: str) -> str:
    if _URI_ESCAPES.keys().isdisjoint(text):
        return text
    return "".join(_URI_ESCAPES.get(c, c) for c in text)


def _check_digit(digits: str) -> str:
    backwards = digits[::-1]
    total = 3 * sum(map(int, backwards[::2])) + sum(map(int, backwards[1::2]))
    return str(-total % 10)


def _fail(scheme: str, reason: str) -> ParseError:
    return ParseError(WHAT, f"{scheme}: {reason}")


def _padded(value: int, digits: int) -> str:
    return f"{value:0{digits}d}" if digits else ""


def _string7(scheme: str, what: str, value: int, width: int, max_chars: int) -> str:
    """TDS 14.3.5 String decoding: 7-bit characters, zero-terminated, zero-padded."""
    count = width // 7
    chars: list[str] = []
    shift = width
    for _ in range(count):
        shift -= 7
        code = (value >> shift) & 0x7F
        if code == 0:
            if value & ((1 << shift) - 1):
                raise _fail(scheme, f"{what}: non-zero 7-bit segment after zero segment")
            break
        char = chr(code)
        if char not in _CHARSET_82:
            raise _fail(scheme, f"{what}: illegal character 0x{code:02X} (not in Table A-1)")
        chars.append(char)
    else:
        if value & ((1 << shift) - 1):
            raise _fail(scheme, f"{what}: non-zero padding bits")
    if not chars:
        raise _fail(scheme, f"empty {what}: first 7-bit segment is zero")
    if len(chars) > max_chars:
        raise _fail(scheme, f"{what} longer than {max_chars} characters")
    return "".join(chars)


def _numeric_string(scheme: str, what: str, value: int, max_digits: int) -> str:
    """TDS 14.3.8 Numeric String decoding: the digits follow a leading '1'."""
    text = str(value)
    if text[0] != "1" or len(text) - 1 > max_digits:
        raise _fail(
            scheme, f"{what}: {value} is not a '1'-prefixed string of <= {max_digits} digits"
        )
    return text[1:]


def _string6(scheme: str, what: str, value: int, width: int, start: int) -> tuple[str, int]:
    """6-bit characters from bit `start` (counting from the MSB) up to a zero terminator."""
    chars: list[str] = []
    pos = start
    while True:
        if pos + 6 > width:
            raise _fail(scheme, f"too few bits: {what} has no terminator")
        code = (value >> (width - pos - 6)) & 0x3F
        pos += 6
        if code == 0:
            return "".join(chars), pos
        char = chr(code if code >= 0x20 else code | 0x40)
        if char not in _CHARSET_6BIT:
            raise _fail(scheme, f"{what}: illegal character {char!r} (not in Table A-2)")
        chars.append(char)


@dataclass(frozen=True, slots=True)
class _Head:
    filter: int
    partition: int
    row: _Row
    gcp: str
    rest: int
    rest_bits: int


def _head(scheme: str, value: int, bits: int, table: _Table) -> _Head:
    """Filter, partition and company prefix (TDS 14.3.3 partition decoding, first half)."""
    partition = (value >> (bits - 14)) & 7
    if partition > 6:
        raise _fail(scheme, f"invalid partition {partition} (0-6 allowed)")
    row = table[partition]
    c_bits, l_digits = row[0], row[1]
    rest_bits = bits - 14 - c_bits
    if rest_bits < 0:
        raise _fail(scheme, f"too few bits: {bits} bits end inside the company prefix")
    prefix = (value >> rest_bits) & ((1 << c_bits) - 1)
    if prefix >= _POW10[l_digits]:
        raise _fail(scheme, f"company prefix {prefix} >= 10^{l_digits}")
    return _Head(
        (value >> (bits - 11)) & 7,
        partition,
        row,
        _padded(prefix, l_digits),
        value & ((1 << rest_bits) - 1),
        rest_bits,
    )


def _second(scheme: str, what: str, head: _Head, *, padded: bool = True) -> tuple[str, int, int]:
    """The field after the company prefix, and what follows it (value, width)."""
    d_bits, k_digits = head.row[2], head.row[3]
    tail_bits = head.rest_bits - d_bits
    number = head.rest >> tail_bits
    if number >= _POW10[k_digits]:
        raise _fail(scheme, f"{what} {number} >= 10^{k_digits}")
    text = _padded(number, k_digits) if padded else str(number)
    return text, head.rest & ((1 << tail_bits) - 1), tail_bits


def _make(
    scheme: str,
    bits: int,
    head: _Head | None,
    parts: tuple[str, ...],
    fields: dict[str, str],
    element_string: str | None,
    filter_value: int | None = None,
) -> Epc:
    body = ".".join(_uri_escape(p) for p in parts)
    base = scheme.rsplit("-", 1)[0]
    if head is not None:
        filter_value = head.filter
    tag_body = body if filter_value is None else f"{filter_value}.{body}"
    return Epc(
        scheme=scheme,
        uri=f"urn:epc:id:{base}:{body}",
        tag_uri=f"urn:epc:tag:{scheme}:{tag_body}",
        filter=filter_value,
        partition=None if head is None else head.partition,
        company_prefix=None if head is None else head.gcp,
        fields=types.MappingProxyType(fields),
        element_string=element_string,
        bits=bits,
    )


def _sgtin(scheme: str) -> Callable[[int, int], Epc]:
    def decode(value: int, bits: int) -> Epc:
        head = _head(scheme, value, bits, _SGTIN)
        item, tail, tail_bits = _second(scheme, "indicator/item ref", head)
        if scheme == "sgtin-96":
            serial = str(tail)
        else:
            serial = _string7(scheme, "serial", tail, tail_bits, 20)
        body = item[0] + head.gcp + item[1:]
        gtin = body + _check_digit(body)
        return _make(
            scheme,
            bits,
            head,
            (head.gcp, item, serial),
            {"gtin": gtin, "serial": serial},
            f"(01){gtin}(21){serial}",
        )

    return decode


def _sscc_like(scheme: str, key: str, ai: str) -> Callable[[int, int], Epc]:
    """SSCC-96, GSRN-96 and GSRNP-96: an 18-digit key and 24 reserved zero bits."""

    def decode(value: int, bits: int) -> Epc:
        head = _head(scheme, value, bits, _SSCC)
        what = "serial ref" if key == "sscc" else "service ref"
        ref, reserved, _ = _second(scheme, what, head)
        if reserved:
            raise _fail(scheme, "reserved bits not zero")
        body = ref[0] + head.gcp + ref[1:] if key == "sscc" else head.gcp + ref
        number = body + _check_digit(body)
        return _make(scheme, bits, head, (head.gcp, ref), {key: number}, f"({ai}){number}")

    return decode


def _sgln(scheme: str) -> Callable[[int, int], Epc]:
    def decode(value: int, bits: int) -> Epc:
        head = _head(scheme, value, bits, _SGLN)
        location, tail, tail_bits = _second(scheme, "location ref", head)
        if scheme == "sgln-96":
            extension = str(tail)
        else:
            extension = _string7(scheme, "extension", tail, tail_bits, 20)
        body = head.gcp + location
        gln = body + _check_digit(body)
        # Extension "0" means the GLN itself, with no AI (254) (TDS 7.4).
        element = f"(414){gln}" if extension == "0" else f"(414){gln}(254){extension}"
        return _make(
            scheme,
            bits,
            head,
            (head.gcp, location, extension),
            {"gln": gln, "extension": extension},
            element,
        )

    return decode


def _grai(scheme: str) -> Callable[[int, int], Epc]:
    def decode(value: int, bits: int) -> Epc:
        head = _head(scheme, value, bits, _GRAI)
        asset_type, tail, tail_bits = _second(scheme, "asset type", head)
        if scheme == "grai-96":
            serial = str(tail)
        else:
            serial = _string7(scheme, "serial", tail, tail_bits, 16)
        body = "0" + head.gcp + asset_type
        grai = body + _check_digit(body) + serial
        return _make(
            scheme,
            bits,
            head,
            (head.gcp, asset_type, serial),
            {"grai": grai, "serial": serial},
            f"(8003){grai}",
        )

    return decode


def _giai(scheme: str) -> Callable[[int, int], Epc]:
    def decode(value: int, bits: int) -> Epc:
        if scheme == "giai-96":
            head = _head(scheme, value, bits, _GIAI96)
            asset, _, _ = _second(scheme, "asset ref", head, padded=False)
        else:
            head = _head(scheme, value, bits, _GIAI202)
            asset = _string7(scheme, "asset ref", head.rest, head.rest_bits, head.row[3])
        giai = head.gcp + asset
        return _make(scheme, bits, head, (head.gcp, asset), {"giai": giai}, f"(8004){giai}")

    return decode


def _gdti(scheme: str) -> Callable[[int, int], Epc]:
    def decode(value: int, bits: int) -> Epc:
        head = _head(scheme, value, bits, _SGLN)
        doc_type, tail, tail_bits = _second(scheme, "document type", head)
        if scheme == "gdti-96":
            serial = str(tail)
        elif scheme == "gdti-113":
            serial = _numeric_string(scheme, "serial", tail, 17)
        else:
            serial = _string7(scheme, "serial", tail, tail_bits, 17)
        body = head.gcp + doc_type
        gdti = body + _check_digit(body) + serial
        return _make(
            scheme,
            bits,
            head,
            (head.gcp, doc_type, serial),
            {"gdti": gdti, "serial": serial},
            f"(253){gdti}",
        )

    return decode


def _sgcn(value: int, bits: int) -> Epc:
    scheme = "sgcn-96"
    head = _head(scheme, value, bits, _SGLN)
    coupon, tail, _ = _second(scheme, "coupon ref", head)
    serial = _numeric_string(scheme, "serial", tail, 12)
    body = head.gcp + coupon
    sgcn = body + _check_digit(body) + serial
    return _make(
        scheme,
        bits,
        head,
        (head.gcp, coupon, serial),
        {"sgcn": sgcn, "serial": serial},
        f"(255){sgcn}",
    )


def _cpi96(value: int, bits: int) -> Epc:
    scheme = "cpi-96"
    head = _head(scheme, value, bits, _CPI96)
    reference, serial_value, _ = _second(scheme, "component/part ref", head, padded=False)
    serial = str(serial_value)
    cpi = head.gcp + reference
    return _make(
        scheme,
        bits,
        head,
        (head.gcp, reference, serial),
        {"cpi": cpi, "serial": serial},
        f"(8010){cpi}(8011){serial}",
    )


def _cpi_var(value: int, bits: int) -> Epc:
    scheme = "cpi-var"
    head = _head(scheme, value, bits, _CPIVAR)
    start = bits - head.rest_bits
    reference, pos = _string6(scheme, "component/part ref", value, bits, start)
    if len(reference) > head.row[3]:
        raise _fail(scheme, f"component/part ref longer than {head.row[3]} characters")
    if pos + 40 > bits:
        raise _fail(scheme, f"too few bits: serial needs 40 bits after bit {pos}")
    length = pos + 40
    serial = str((value >> (bits - length)) & ((1 << 40) - 1))
    cpi = head.gcp + reference
    return _make(
        scheme,
        length,
        head,
        (head.gcp, reference, serial),
        {"cpi": cpi, "serial": serial},
        f"(8010){cpi}(8011){serial}",
    )


def _itip(scheme: str) -> Callable[[int, int], Epc]:
    def decode(value: int, bits: int) -> Epc:
        head = _head(scheme, value, bits, _SGTIN)
        item, tail, tail_bits = _second(scheme, "indicator/item ref", head)
        serial_bits = tail_bits - 14
        piece_value = tail >> (serial_bits + 7)
        total_value = (tail >> serial_bits) & 0x7F
        for what, number in (("piece", piece_value), ("total", total_value)):
            if number >= 100:
                raise _fail(scheme, f"{what} {number} >= 10^2")
        piece, total = f"{piece_value:02d}", f"{total_value:02d}"
        serial_value = tail & ((1 << serial_bits) - 1)
        if scheme == "itip-110":
            serial = str(serial_value)
        else:
            serial = _string7(scheme, "serial", serial_value, serial_bits, 20)
        body = item[0] + head.gcp + item[1:]
        gtin = body + _check_digit(body)
        itip = gtin + piece + total
        return _make(
            scheme,
            bits,
            head,
            (head.gcp, item, piece, total, serial),
            {"itip": itip, "gtin": gtin, "piece": piece, "total": total, "serial": serial},
            f"(8006){itip}(21){serial}",
        )

    return decode


def _gid(value: int, bits: int) -> Epc:
    manager = str(value >> 60 & ((1 << 28) - 1))
    object_class = str(value >> 36 & ((1 << 24) - 1))
    serial = str(value & ((1 << 36) - 1))
    return _make(
        "gid-96",
        bits,
        None,
        (manager, object_class, serial),
        {"general_manager": manager, "object_class": object_class, "serial": serial},
        None,
    )


def _usdod(value: int, bits: int) -> Epc:
    scheme = "usdod-96"
    raw_cage = (value >> 36 & ((1 << 48) - 1)).to_bytes(6, "big")
    # A 5-character CAGE code is stored behind one leading space.
    cage_bytes = raw_cage[1:] if raw_cage[:1] == b" " else raw_cage
    if not all(0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A for b in cage_bytes):
        raise _fail(scheme, f"CAGE/DoDAAC {raw_cage!r}: illegal character")
    cage = cage_bytes.decode("ascii")
    serial = str(value & ((1 << 36) - 1))
    return _make(
        scheme,
        bits,
        None,
        (cage, serial),
        {"cage": cage, "serial": serial},
        None,
        filter_value=(value >> 84) & 0xF,
    )


def _adi_var(value: int, bits: int) -> Epc:
    scheme = "adi-var"
    cage_raw = "".join(
        chr(code if code >= 0x20 else code | 0x40)
        for code in ((value >> (bits - 14 - 6 * (i + 1))) & 0x3F for i in range(6))
    )
    cage = cage_raw.removeprefix(" ")
    if not cage or any(c not in _CHARSET_6BIT or c in "#-/" for c in cage):
        raise _fail(scheme, f"CAGE/DoDAAC {cage_raw!r}: illegal character")
    part, pos = _string6(scheme, "part number", value, bits, 50)
    serial, pos = _string6(scheme, "serial", value, bits, pos)
    if not serial:
        raise _fail(scheme, "empty serial")
    if len(part) > 32 or len(serial) > 30:
        raise _fail(scheme, "part number over 32 or serial over 30 characters")
    if "#" in part or "#" in serial[1:]:
        raise _fail(scheme, "'#' is allowed only as the first character of the serial")
    return _make(
        scheme,
        pos,
        None,
        (cage, part, serial),
        {"cage": cage, "part": part, "serial": serial},
        None,
        filter_value=(value >> (bits - 14)) & 0x3F,
    )


# Shortest possible variable-length EPCs: header, filter, partition or CAGE, terminators.
_MIN_VAR_BITS = {"adi-var": 68, "cpi-var": 80}

# header -> (scheme, length in bits or 0 for variable length, decoder of exactly those bits)
_DECODERS: dict[int, tuple[str, int, Callable[[int, int], Epc]]] = {
    0x2C: ("gdti-96", 96, _gdti("gdti-96")),
    0x2D: ("gsrn-96", 96, _sscc_like("gsrn-96", "gsrn", "8018")),
    0x2E: ("gsrnp-96", 96, _sscc_like("gsrnp-96", "gsrnp", "8017")),
    0x2F: ("usdod-96", 96, _usdod),
    0x30: ("sgtin-96", 96, _sgtin("sgtin-96")),
    0x31: ("sscc-96", 96, _sscc_like("sscc-96", "sscc", "00")),
    0x32: ("sgln-96", 96, _sgln("sgln-96")),
    0x33: ("grai-96", 96, _grai("grai-96")),
    0x34: ("giai-96", 96, _giai("giai-96")),
    0x35: ("gid-96", 96, _gid),
    0x36: ("sgtin-198", 198, _sgtin("sgtin-198")),
    0x37: ("grai-170", 170, _grai("grai-170")),
    0x38: ("giai-202", 202, _giai("giai-202")),
    0x39: ("sgln-195", 195, _sgln("sgln-195")),
    0x3A: ("gdti-113", 113, _gdti("gdti-113")),
    0x3B: ("adi-var", 0, _adi_var),
    0x3C: ("cpi-96", 96, _cpi96),
    0x3D: ("cpi-var", 0, _cpi_var),
    0x3E: ("gdti-174", 174, _gdti("gdti-174")),
    0x3F: ("sgcn-96", 96, _sgcn),
    0x40: ("itip-110", 110, _itip("itip-110")),
    0x41: ("itip-212", 212, _itip("itip-212")),
}
