"""Barcode scans to domain values: GS1 data via a `Gs1Syntax` plus a strictness layer, and patterns.

The GS1 element-string and Digital Link grammar comes from outside (`gateway.gs1`, which wraps
biip), so this module stays pure; the rule table here is the judge of every value it returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal, Protocol
from urllib.parse import unquote_plus

from gateway.domain.gs1_rules import (
    BUILTIN_RULES,
    RuleTable,
    check_digit_ok,
    gs1_check_digit,
)
from gateway.errors import ConfigError, ParseError

__all__ = [
    "DEFAULT_PATTERNS",
    "Barcode",
    "BarcodeKind",
    "Gs1Element",
    "Gs1Syntax",
    "Patterns",
    "describe_barcode",
    "gs1_check_digit",
    "parse_barcode",
]

GS = "\x1d"

BarcodeKind = Literal["item", "rma", "rma-close", "location", "disposition", "container", "unknown"]


@dataclass(frozen=True, slots=True)
class Patterns:
    """Compiled site patterns for non-GS1 codes; each must match the whole scan."""

    rma: re.Pattern[str]
    rma_close: re.Pattern[str]
    location: re.Pattern[str]
    disposition: re.Pattern[str]

    @classmethod
    def compile(
        cls,
        rma: str = r"^RMA-[0-9A-Z]+$",
        rma_close: str = r"^RMA-CLOSE$",
        location: str = r"^LOC-[0-9A-Z-]+$",
        disposition: str = r"^DISP-(RESTOCK|REPAIR|RECYCLE|DISPOSE|DONATE)$",
    ) -> Patterns:
        """Compile the patterns; raises ConfigError naming the pattern that is not a regex."""
        compiled: dict[str, re.Pattern[str]] = {}
        for name, source in (
            ("rma", rma),
            ("rma_close", rma_close),
            ("location", location),
            ("disposition", disposition),
        ):
            try:
                compiled[name] = re.compile(source)
            except re.error as exc:
                raise ConfigError(f"patterns.{name}", f"not a regular expression: {exc}") from exc
        return cls(**compiled)


DEFAULT_PATTERNS = Patterns.compile()


@dataclass(frozen=True, slots=True)
class Gs1Element:
    """One GS1 element string: its AI, its value, and the date the value holds (AIs 11-17)."""

    ai: str
    value: str
    date: date | None = None


class Gs1Syntax(Protocol):
    """The GS1 grammar: reads element strings and Digital Link URIs; raises ParseError (why)."""

    def element_at(self, data: str) -> Gs1Element:
        """The element string at the start of `data` (GS-separated data may follow)."""
        ...

    def digital_link(self, uri: str) -> tuple[Gs1Element, ...]:
        """The element strings a GS1 Digital Link URI carries, path first."""
        ...


@dataclass(frozen=True, slots=True)
class Barcode:
    """One decoded scan: what kind of thing it names and the identifiers it carries."""

    kind: BarcodeKind
    raw: str
    symbology: str | None
    value: str
    ais: tuple[tuple[str, str], ...]
    gtin: str | None = None
    serial: str | None = None
    batch: str | None = None
    expiry: str | None = None
    sscc: str | None = None
    grai: str | None = None
    giai: str | None = None
    gln: str | None = None
    gln_extension: str | None = None
    pattern: str | None = None


def parse_barcode(
    data: str,
    patterns: Patterns = DEFAULT_PATTERNS,
    *,
    gs1: Gs1Syntax,
    rules: RuleTable = BUILTIN_RULES,
    permit_zero_suppressed_gtin: bool = False,
) -> Barcode:
    """Decode one scan; raises ParseError with a reason naming the AI and rule when invalid."""
    raw = data
    data = data.strip("\r\n")
    if data.startswith("]"):
        symbology = data[:3]
        payload = data[3:]
        if len(symbology) < 3 or not _SYMBOLOGY.fullmatch(symbology):
            raise ParseError("barcode", f"unsupported symbology identifier {symbology!r}")
        if symbology in _GS1_AI_SYMBOLOGIES:
            return _from_gs1_data(raw, symbology, payload, gs1, rules)
        if symbology in _EAN_LENGTHS:
            return _from_ean(raw, symbology, payload)
        return _from_plain(
            raw, symbology, payload, patterns, gs1, rules, permit_zero_suppressed_gtin
        )
    return _from_plain(raw, None, data, patterns, gs1, rules, permit_zero_suppressed_gtin)


def describe_barcode(
    data: str,
    patterns: Patterns = DEFAULT_PATTERNS,
    *,
    gs1: Gs1Syntax,
    permit_zero_suppressed_gtin: bool = False,
) -> dict[str, object]:
    """The JSON object `gateway decode barcode` prints for one input; never raises."""
    try:
        barcode = parse_barcode(
            data, patterns, gs1=gs1, permit_zero_suppressed_gtin=permit_zero_suppressed_gtin
        )
    except ParseError as exc:
        return {"input": data, "valid": False, "error": exc.reason}
    return {
        "input": data,
        "valid": True,
        "kind": barcode.kind,
        "symbology": barcode.symbology,
        "value": barcode.value,
        "gtin": barcode.gtin,
        "serial": barcode.serial,
        "batch": barcode.batch,
        "expiry": barcode.expiry,
        "sscc": barcode.sscc,
        "grai": barcode.grai,
        "giai": barcode.giai,
        "gln": barcode.gln,
        "gln_extension": barcode.gln_extension,
        "ais": dict(barcode.ais),
        "pattern": barcode.pattern,
    }


# AIM symbology identifiers (ISO/IEC 15424): `]`, a code letter, a modifier character.
_SYMBOLOGY = re.compile(r"\][ACdeEFGHIJLMQz][0-9A-Z]")
_GS1_AI_SYMBOLOGIES = frozenset({"]C1", "]e0", "]e1", "]e2", "]d2", "]Q3", "]J1"})
_EAN_LENGTHS = {"]E0": 13, "]E4": 8}
_GTIN_LENGTHS = frozenset({8, 12, 13, 14})
_SSCC_LENGTH = 18
_PATTERN_ORDER = (
    ("rma-close", "rma_close"),
    ("rma", "rma"),
    ("disposition", "disposition"),
    ("location", "location"),
)


def _from_ean(raw: str, symbology: str, payload: str) -> Barcode:
    length = _EAN_LENGTHS[symbology]
    if not (payload.isascii() and payload.isdigit()):
        raise ParseError("barcode", f"{symbology} data may only contain digits")
    if len(payload) < length:
        raise ParseError("barcode", f"{symbology} data is too short: {length} digits expected")
    if len(payload) > length:
        raise ParseError("barcode", f"{symbology} data is too long: {length} digits expected")
    if not check_digit_ok(payload):
        raise ParseError("barcode", f"{symbology} check digit is incorrect")
    return Barcode(
        kind="item", raw=raw, symbology=symbology, value=payload, ais=(), gtin=payload.zfill(14)
    )


def _from_plain(
    raw: str,
    symbology: str | None,
    payload: str,
    patterns: Patterns,
    gs1: Gs1Syntax,
    rules: RuleTable,
    permit_zero_suppressed_gtin: bool,
) -> Barcode:
    if payload.startswith(("https://", "http://")):
        return _from_digital_link(raw, symbology, payload, gs1, rules, permit_zero_suppressed_gtin)
    for kind, name in _PATTERN_ORDER:
        match = getattr(patterns, name).fullmatch(payload)
        if match is not None:
            value = match.group(1) if kind == "disposition" and match.re.groups else payload
            return Barcode(
                kind=kind,  # type: ignore[arg-type]  # the table holds BarcodeKind literals
                raw=raw,
                symbology=symbology,
                value=value,
                ais=(),
                pattern=kind,
            )
    if symbology is None and payload.startswith("("):
        return _from_bracketed(raw, payload, gs1, rules)
    if payload.isascii() and payload.isdigit():
        # Scanners without AIM identifiers send EAN/UPC/ITF-14 and SSCC labels as bare digits.
        if len(payload) in _GTIN_LENGTHS:
            if not check_digit_ok(payload):
                raise ParseError("barcode", "GTIN check digit is incorrect")
            gtin = payload.zfill(14)
            return Barcode(
                kind="item", raw=raw, symbology=symbology, value=payload, ais=(), gtin=gtin
            )
        if len(payload) == _SSCC_LENGTH:
            if not check_digit_ok(payload):
                raise ParseError("barcode", "SSCC check digit is incorrect")
            return Barcode(
                kind="container",
                raw=raw,
                symbology=symbology,
                value=payload,
                ais=(),
                sscc=payload,
            )
    raise ParseError("barcode", "unrecognised barcode")


_BRACKETED = re.compile(r"\((\d{2,4})\)([^(]*)")


def _from_bracketed(raw: str, text: str, gs1: Gs1Syntax, rules: RuleTable) -> Barcode:
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _BRACKETED.match(text, pos)
        if match is None:
            raise ParseError("barcode", f"not a bracketed AI string at position {pos + 1}")
        ai, value = match.groups()
        rules.rule(ai)
        rules.check_value(ai, value)
        pairs.append((ai, value))
        pos = match.end()
    if not pairs:
        raise ParseError("barcode", "the AI data is empty")
    data = ""
    for index, (ai, value) in enumerate(pairs):
        data += ai + value
        if index < len(pairs) - 1 and not rules.rule(ai).predefined_length:
            data += GS
    return _from_gs1_data(raw, None, data, gs1, rules, value_text=text)


def _from_gs1_data(
    raw: str,
    symbology: str | None,
    data: str,
    gs1: Gs1Syntax,
    rules: RuleTable,
    *,
    value_text: str | None = None,
) -> Barcode:
    if not data:
        raise ParseError("barcode", "the AI data is empty")
    if "^" in data:
        raise ParseError("barcode", "scan data contains the illegal character '^'")
    elements: list[Gs1Element] = []
    pos = 0
    end = len(data)
    while pos < end:
        rule = rules.ai_at(data, pos)
        try:
            element = gs1.element_at(data[pos:])
        except ParseError as exc:
            # the grammar has no rule for it or its own pattern refuses the value: explain with ours
            value = _field(data, pos + len(rule.ai), rule.fixed_length)
            rules.check_value(rule.ai, value)
            raise ParseError("barcode", f"AI ({rule.ai}): {exc.reason}") from exc
        ai = element.ai
        if ai != rule.ai:
            raise ParseError("barcode", f"AI ({rule.ai}) is read by biip as AI ({ai})")
        pos += len(ai) + len(element.value)
        if not rule.predefined_length and pos < end and data[pos] != GS:
            raise ParseError(
                "barcode",
                f"AI ({ai}) value is too long or lacks the FNC1 (GS) separator it needs",
            )
        if pos < end and data[pos] == GS:
            pos += 1
            if pos == end:
                raise ParseError("barcode", "the data ends with an FNC1 (GS) separator")
        elements.append(element)
    return _gs1_barcode(raw, symbology, value_text or data, elements, rules)


def _field(data: str, start: int, fixed_length: int | None) -> str:
    if fixed_length is not None:
        return data[start : start + fixed_length]
    stop = data.find(GS, start)
    return data[start:] if stop < 0 else data[start:stop]


def _from_digital_link(
    raw: str,
    symbology: str | None,
    uri: str,
    gs1: Gs1Syntax,
    rules: RuleTable,
    permit_zero_suppressed_gtin: bool,
) -> Barcode:
    without_fragment = uri.split("#", 1)[0]
    base, _, query = without_fragment.partition("?")
    segments = base.split("/")[3:]
    start = next((i for i, s in enumerate(segments) if _qualifiers(rules, s) is not None), None)
    if start is None or (len(segments) - start) % 2:
        raise ParseError("barcode", "no GS1 Digital Link keys found in the path")
    primary = segments[start]
    path_ais = segments[start::2]
    if primary == "01" and len(segments[start + 1]) != 14 and not permit_zero_suppressed_gtin:
        raise ParseError("barcode", "AI (01) value is too short (zero-suppressed GTIN)")
    seen = set(path_ais)
    if len(seen) != len(path_ais):
        raise ParseError("barcode", "an AI is duplicated in the Digital Link path")
    _check_query(query, primary, seen, rules)
    elements = list(gs1.digital_link(uri))
    return _gs1_barcode(raw, symbology, uri, elements, rules)


def _qualifiers(rules: RuleTable, ai: str) -> frozenset[str] | None:
    """The Digital Link qualifiers of a primary key AI, or None when `ai` is not one."""
    rule = rules.get(ai)
    if rule is None or rule.dl_qualifiers is None:
        return None
    return frozenset(q for alternative in rule.dl_qualifiers for q in alternative)


def _check_query(query: str, primary: str, seen: set[str], rules: RuleTable) -> None:
    for item in query.split("&") if query else ():
        key, _, value = item.partition("=")
        if not key.isdigit():
            continue  # non-AI query parameters are for the resolver, not for us
        rule = rules.get(key)
        if rule is None:
            raise ParseError("barcode", f"unknown AI ({key}) in Digital Link query parameters")
        if key in seen:
            raise ParseError("barcode", f"AI ({key}) is duplicated")
        if key in (_qualifiers(rules, primary) or ()):
            raise ParseError("barcode", f"AI ({key}) is a key qualifier; it belongs in the path")
        if not rule.dl_attribute:
            raise ParseError("barcode", f"AI ({key}) is not a Digital Link data attribute")
        if not value:
            raise ParseError("barcode", f"AI ({key}) value query element is empty")
        rules.check_value(key, unquote_plus(value))
        seen.add(key)


def _gs1_barcode(
    raw: str,
    symbology: str | None,
    value: str,
    elements: list[Gs1Element],
    rules: RuleTable,
) -> Barcode:
    ais = tuple((element.ai, element.value) for element in elements)
    found: dict[str, str] = {}
    for ai, ai_value in ais:
        rules.check_value(ai, ai_value)
        previous = found.setdefault(ai, ai_value)
        if previous != ai_value:
            raise ParseError("barcode", f"AI ({ai}) appears twice with different values")
    rules.check_associations(found)
    expiry = next((e.date for e in elements if e.ai == "17"), None)
    kind: BarcodeKind = "unknown"
    if "00" in found:
        kind = "container"
    elif "01" in found or "8003" in found or "8004" in found:
        kind = "item"
    elif "414" in found:
        kind = "location"
    return Barcode(
        kind=kind,
        raw=raw,
        symbology=symbology,
        value=value,
        ais=ais,
        gtin=found.get("01"),
        serial=found.get("21"),
        batch=found.get("10"),
        expiry=expiry.isoformat() if expiry is not None else None,
        sscc=found.get("00"),
        grai=found.get("8003"),
        giai=found.get("8004"),
        gln=found.get("414"),
        gln_extension=found.get("254"),
    )
