"""GS1 AI rule table (format, check-digit and date linters, req/ex associations) and its checks.

The built-in table transcribes the GS1 General Specifications AI table as published in GS1's
machine-readable Barcode Syntax Dictionary (Copyright GS1 AISBL, BWIPP, Zint; Apache-2.0).
`parse_syntax_dictionary` reads a newer dictionary's text (config loading reads the file) so a
site can update the rules without a release; tests prove the built-in table agrees with the
reference dictionary AI by AI.
"""

from __future__ import annotations

import calendar
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from gateway.errors import ParseError

KIND_CHARS: Mapping[str, frozenset[str]] = {
    "N": frozenset(string.digits),
    "X": frozenset(
        "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
    ),
    "Y": frozenset("#-/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    "Z": frozenset(string.ascii_letters + string.digits + "-_="),
}
KIND_NAMES: Mapping[str, str] = {
    "N": "a digit",
    "X": "a CSET 82 character",
    "Y": "a CSET 39 character",
    "Z": "a base64url character",
}


@dataclass(frozen=True, slots=True)
class Component:
    """One part of an AI's data field: character set, length bounds, linters, optionality."""

    kind: str
    min_len: int
    max_len: int
    optional: bool
    linters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AiRule:
    """What GS1 says about one AI: format, FNC1 need, associations, Digital Link role."""

    ai: str
    predefined_length: bool  # `*` flag: no FNC1 separator needed after it
    dl_attribute: bool  # `?` flag: allowed as a Digital Link query attribute
    components: tuple[Component, ...]
    req: tuple[tuple[tuple[str, ...], ...], ...]  # every group: one alternative (AND of patterns)
    ex: tuple[str, ...]
    dl_qualifiers: tuple[tuple[str, ...], ...] | None  # None: not a Digital Link primary key
    title: str

    @property
    def fixed_length(self) -> int | None:
        """Total data length when every component is fixed and mandatory, else None."""
        if all(c.min_len == c.max_len and not c.optional for c in self.components):
            return sum(c.max_len for c in self.components)
        return None

    @property
    def linters(self) -> frozenset[str]:
        """Every linter named by any component."""
        return frozenset(name for c in self.components for name in c.linters)


class RuleTable:
    """AI rules by AI, with the checks the strictness layer applies to parsed GS1 data."""

    __slots__ = ("_rules",)

    def __init__(self, rules: Iterable[AiRule]) -> None:
        self._rules: dict[str, AiRule] = {rule.ai: rule for rule in rules}

    def __contains__(self, ai: object) -> bool:
        return ai in self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def get(self, ai: str) -> AiRule | None:
        """The rule for `ai`, or None when the table does not know it."""
        return self._rules.get(ai)

    def rules(self) -> tuple[AiRule, ...]:
        """Every rule, in table order."""
        return tuple(self._rules.values())

    def rule(self, ai: str) -> AiRule:
        """The rule for `ai`; raises ParseError naming an unrecognised AI."""
        found = self._rules.get(ai)
        if found is None:
            raise ParseError("barcode", f"unrecognised AI ({ai})")
        return found

    def ai_at(self, data: str, pos: int) -> AiRule:
        """The AI that starts `data` at `pos` (AIs are prefix-free); raises ParseError if none."""
        for size in (2, 3, 4):
            found = self._rules.get(data[pos : pos + size])
            if found is not None:
                return found
        raise ParseError("barcode", f"no known AI is a prefix of {data[pos : pos + 4]!r}")

    def check_value(self, ai: str, value: str) -> None:
        """Raise ParseError naming the AI and the rule when `value` breaks the AI's format."""
        pos = 0
        for component in self.rule(ai).components:
            if pos >= len(value) and component.optional:
                break
            part = value[pos : pos + component.max_len]
            if len(part) < component.min_len:
                raise ParseError("barcode", f"AI ({ai}) value is too short")
            _check_component(ai, component, part, pos)
            pos += len(part)
        if pos < len(value):
            raise ParseError("barcode", f"AI ({ai}) value is too long")

    def check_associations(self, ais: Iterable[str]) -> None:
        """Raise ParseError when a present AI lacks a required partner or has an excluded one."""
        present = tuple(dict.fromkeys(ais))
        for ai in present:
            rule = self.rule(ai)
            for pattern in rule.ex:
                for other in present:
                    if other != ai and ai_matches(other, pattern):
                        raise ParseError(
                            "barcode", f"it is invalid to pair AI ({ai}) with AI ({other})"
                        )
            for group in rule.req:
                if not any(
                    all(any(ai_matches(other, p) for other in present) for p in alternative)
                    for alternative in group
                ):
                    wanted = ",".join("+".join(alternative) for alternative in group)
                    raise ParseError(
                        "barcode", f"required AIs for AI ({ai}) are not satisfied: {wanted}"
                    )


def ai_matches(ai: str, pattern: str) -> bool:
    """Whether `ai` matches a dictionary AI pattern such as `310n` or `31nn`."""
    if len(ai) != len(pattern):
        return False
    return all(
        p in {c, "n"} and (p != "n" or c.isdigit()) for c, p in zip(ai, pattern, strict=True)
    )


def _check_component(ai: str, component: Component, part: str, offset: int) -> None:
    chars = KIND_CHARS[component.kind]
    for index, char in enumerate(part):
        if char not in chars:
            raise ParseError(
                "barcode",
                f"AI ({ai}): {char!r} at position {offset + index + 1} is not "
                f"{KIND_NAMES[component.kind]}",
            )
    for name in component.linters:
        linter = LINTERS.get(name)
        if linter is not None:
            problem = linter(part)
            if problem is not None:
                raise ParseError("barcode", f"AI ({ai}): {problem} ({name})")


def parse_syntax_dictionary(text: str) -> RuleTable:
    """Parse GS1 Barcode Syntax Dictionary text; raises ParseError naming the bad line."""
    rules: list[AiRule] = []
    for number, line in enumerate(text.splitlines(), start=1):
        body, _, title = line.partition("#")
        if not body.strip():
            continue
        try:
            rules.extend(_rules_from_entry(body.split(), title.strip()))
        except ValueError as exc:
            raise ParseError("syntax dictionary", f"line {number}: {exc}") from exc
    return RuleTable(rules)


def gs1_check_digit(payload: str) -> int:
    """The GS1 mod-10 check digit for the digits in `payload` (the check digit excluded)."""
    total = 0
    weight = 3
    for char in reversed(payload):
        total += (ord(char) - 48) * weight
        weight = 4 - weight
    return (10 - total % 10) % 10


def check_digit_ok(digits: str) -> bool:
    """Whether the last digit of an all-digit string is its GS1 mod-10 check digit."""
    return (
        len(digits) >= 2
        and digits.isascii()
        and digits.isdigit()
        and gs1_check_digit(digits[:-1]) == ord(digits[-1]) - 48
    )


def date_problem(yymmdd: str, *, day_zero_ok: bool) -> str | None:
    """Why a YYMMDD date is not valid (GS1: DD=00 allowed where `day_zero_ok`), else None."""
    if len(yymmdd) != 6 or not yymmdd.isdigit():
        return "the date is not six digits"
    year, month, day = int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:])
    # The two-digit year only matters for February 29; every year in GS1's sliding window (7.12)
    # that ends in a multiple of four is a leap year until 2100, so 2000 + yy decides it.
    return _month_day_problem(2000 + year, month, day, day_zero_ok=day_zero_ok)


def _month_day_problem(year: int, month: int, day: int, *, day_zero_ok: bool) -> str | None:
    if not 1 <= month <= 12:
        return "the date contains an illegal month of the year"
    if day == 0 and day_zero_ok:
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return "the date contains an illegal day of the month"
    return None


def _lint_csum(part: str) -> str | None:
    return None if check_digit_ok(part) else "the numeric check digit is incorrect"


_CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_CSET32 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83)


def _lint_csumalpha(part: str) -> str | None:
    # GS1 General Specifications 7.9.5: two check characters over CSET 82 values, prime weights
    if len(part) < 3 or len(part) > len(_PRIMES) + 2:
        return "the alphanumeric check pair cannot be computed"
    body = part[:-2]
    total = (
        sum(_CSET82.index(char) * _PRIMES[len(body) - 1 - index] for index, char in enumerate(body))
        % 1021
    )
    if part[-2:] != _CSET32[total >> 5] + _CSET32[total & 31]:
        return "the alphanumeric check pair is incorrect"
    return None


def _lint_yymmd0(part: str) -> str | None:
    return date_problem(part, day_zero_ok=True)


def _lint_yymmdd(part: str) -> str | None:
    return date_problem(part, day_zero_ok=False)


def _lint_yyyymmdd(part: str) -> str | None:
    if len(part) != 8:
        return "the date is not eight digits"
    return _month_day_problem(int(part[:4]), int(part[4:6]), int(part[6:]), day_zero_ok=False)


def _lint_hhmi(part: str) -> str | None:
    if int(part[:2]) > 23 or int(part[2:]) > 59:
        return "the time is not a valid hour and minute"
    return None


def _bounded(limit: int, what: str) -> Callable[[str], str | None]:
    def lint(part: str) -> str | None:
        return None if int(part) <= limit else f"the {what} is out of range"

    return lint


def _one_of(allowed: frozenset[str], what: str) -> Callable[[str], str | None]:
    def lint(part: str) -> str | None:
        return None if part in allowed else f"{what} is not allowed here"

    return lint


def _lint_nonzero(part: str) -> str | None:
    return "a non-zero value is required" if int(part) == 0 else None


def _lint_pieceoftotal(part: str) -> str | None:
    half = len(part) // 2
    piece, total = int(part[:half]), int(part[half:])
    if piece == 0 or total == 0 or piece > total:
        return "the piece number must be between 1 and the total"
    return None


def _lint_nozeroprefix(part: str) -> str | None:
    return "a leading zero is not allowed" if len(part) > 1 and part[0] == "0" else None


def _lint_hasnondigit(part: str) -> str | None:
    return None if not part.isdigit() else "a non-digit character is required"


_PCENC = re.compile(r"[^%]*(?:%[0-9A-Fa-f]{2}[^%]*)*")


def _lint_pcenc(part: str) -> str | None:
    return None if _PCENC.fullmatch(part) else "a percent sign is not followed by two hex digits"


def _lint_iban(part: str) -> str | None:
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[0-9A-Z]{1,30}", part):
        return "the IBAN is not well formed"
    digits = "".join(str(int(char, 36)) for char in part[4:] + part[:4])
    return None if int(digits) % 97 == 1 else "the IBAN check digits are incorrect"


def _lint_posinseqslash(part: str) -> str | None:
    match = re.fullmatch(r"([1-9])/([1-9])", part)
    if match is None or int(match[1]) > int(match[2]):
        return "the position in sequence is not n/m with n <= m"
    return None


LINTERS: Mapping[str, Callable[[str], str | None]] = {
    "csum": _lint_csum,
    "csumalpha": _lint_csumalpha,
    "yymmd0": _lint_yymmd0,
    "yymmdd": _lint_yymmdd,
    "yyyymmdd": _lint_yyyymmdd,
    "hhmi": _lint_hhmi,
    "hh": _bounded(23, "hour"),
    "mi": _bounded(59, "minute"),
    "ss": _bounded(59, "second"),
    "latitude": _bounded(1800000000, "latitude"),
    "longitude": _bounded(3600000000, "longitude"),
    "zero": _one_of(frozenset({"0"}), "a non-zero digit"),
    "yesno": _one_of(frozenset({"0", "1"}), "a value other than 0 or 1"),
    "hyphen": _one_of(frozenset({"-"}), "a character other than a hyphen"),
    "winding": _one_of(frozenset({"0", "1", "9"}), "a winding direction other than 0, 1, 9"),
    "iso5218": _one_of(frozenset({"0", "1", "2", "9"}), "a sex code other than 0, 1, 2, 9"),
    "nonzero": _lint_nonzero,
    "pieceoftotal": _lint_pieceoftotal,
    "nozeroprefix": _lint_nozeroprefix,
    "hasnondigit": _lint_hasnondigit,
    "pcenc": _lint_pcenc,
    "iban": _lint_iban,
    "posinseqslash": _lint_posinseqslash,
}
"""Linters enforced by the strictness layer; any other linter name is accepted unchecked."""

UNCHECKED_LINTERS = frozenset(
    {
        "gcppos1",  # needs GS1's company-prefix length table, not shipped
        "gcppos2",
        "iso3166",  # needs the ISO country and currency code lists
        "iso3166999",
        "iso3166alpha2",
        "iso4217",
        "importeridx",
        "mediatype",
        "packagetype",
        "couponcode",
        "couponposoffer",
    }
)
"""Linters the dictionary names that the gateway knows about but does not enforce."""

_FLAGS = re.compile(r"[*!?\"$%&'()+,\-./:;<=>@\[\\\]^_`{|}~]+")
_COMPONENT = re.compile(r"(\[)?([NXYZ])(\.\.)?(\d+)(\])?((?:,[a-z0-9]+)*)")


def _rules_from_entry(tokens: list[str], title: str) -> list[AiRule]:
    ai_range, rest = tokens[0], tokens[1:]
    flags = ""
    if rest and _FLAGS.fullmatch(rest[0]):
        flags, rest = rest[0], rest[1:]
    specs: list[str] = []
    while rest and _COMPONENT.fullmatch(rest[0]):
        specs.append(rest[0])
        rest = rest[1:]
    if not specs:
        raise ValueError(f"AI {ai_range} has no format specification")
    return _build_rules(ai_range, flags, " ".join(specs), " ".join(rest), title)


def _build_rules(ai_range: str, flags: str, spec: str, attrs: str, title: str) -> list[AiRule]:
    components = tuple(_component(token) for token in spec.split())
    req: list[tuple[tuple[str, ...], ...]] = []
    ex: list[str] = []
    dl_qualifiers: tuple[tuple[str, ...], ...] | None = None
    for attr in attrs.split():
        key, _, value = attr.partition("=")
        if key == "req":
            req.append(tuple(tuple(alt.split("+")) for alt in value.split(",")))
        elif key == "ex":
            ex.extend(value.split(","))
        elif key == "dlpkey":
            dl_qualifiers = (
                tuple(tuple(seq.split(",")) for seq in value.split("|")) if value else ((),)
            )
    first, _, last = ai_range.partition("-")
    if not first.isdigit() or (last and (not last.isdigit() or len(last) != len(first))):
        raise ValueError(f"bad AI or AI range {ai_range!r}")
    ais = (
        [first]
        if not last
        else [str(n).zfill(len(first)) for n in range(int(first), int(last) + 1)]
    )
    return [
        AiRule(
            ai=ai,
            predefined_length="*" in flags,
            dl_attribute="?" in flags,
            components=components,
            req=tuple(req),
            ex=tuple(ex),
            dl_qualifiers=dl_qualifiers,
            title=title,
        )
        for ai in ais
    ]


def _component(token: str) -> Component:
    match = _COMPONENT.fullmatch(token)
    if match is None:
        raise ValueError(f"bad component {token!r}")
    optional_open, kind, variable, length, optional_close, linters = match.groups()
    if bool(optional_open) != bool(optional_close):
        raise ValueError(f"unbalanced brackets in {token!r}")
    size = int(length)
    return Component(
        kind=kind,
        min_len=1 if variable else size,
        max_len=size,
        optional=bool(optional_open),
        linters=tuple(name for name in linters.split(",") if name),
    )


# (AI or range, flags, format specification, attributes, title) per GS1 General Specifications
_BUILTIN: tuple[tuple[str, str, str, str, str], ...] = (
    ("00", "*?", "N18,csum,gcppos2", "dlpkey", "SSCC"),
    ("01", "*?", "N14,csum,gcppos2", "ex=255,37 dlpkey=22,10,21|235", "GTIN"),
    ("02", "*?", "N14,csum,gcppos2", "ex=01,03 req=37", "CONTENT"),
    ("03", "*", "N14,csum,gcppos2", "ex=01,02,37,235", "MTO GTIN"),
    ("10", "?", "X..20", "req=01,02,03,8006,8026", "BATCH/LOT"),
    ("11", "*?", "N6,yymmd0", "req=01,02,03,8006,8026", "PROD DATE"),
    ("12", "*?", "N6,yymmd0", "req=8020", "DUE DATE"),
    ("13", "*?", "N6,yymmd0", "req=01,02,03,8006,8026", "PACK DATE"),
    ("15", "*?", "N6,yymmd0", "req=01,02,03,8006,8026", "BEST BEFORE or BEST BY"),
    ("16", "*?", "N6,yymmd0", "req=01,02,03,8006,8026", "SELL BY"),
    ("17", "*?", "N6,yymmd0", "req=01,02,03,255,8006,8026", "USE BY or EXPIRY"),
    ("20", "*?", "N2", "req=01,02,03,8006,8026", "VARIANT"),
    ("21", "", "X..20", "req=01,03,8006 ex=235", "SERIAL"),
    ("22", "", "X..20", "req=01", "CPV"),
    ("235", "", "X..28", "req=01", "TPX"),
    ("240", "?", "X..30", "req=01,02,03,8006,8026", "ADDITIONAL ID"),
    ("241", "?", "X..30", "req=01,02,03,8006,8026", "CUST. PART No."),
    ("242", "?", "N..6", "req=01,02,8006,8026", "MTO VARIANT"),
    ("243", "?", "X..20", "req=01,03", "PCN"),
    ("250", "?", "X..30", "req=01+21,03+21,8006+21", "SECONDARY SERIAL"),
    ("251", "?", "X..30", "req=01,03,8006", "REF. TO SOURCE"),
    ("253", "?", "N13,csum,gcppos1 [X..17]", "dlpkey", "GDTI"),
    ("254", "", "X..20", "req=414", "GLN EXTENSION COMPONENT"),
    ("255", "?", "N13,csum,gcppos1 [N..12]", "dlpkey ex=01,02,415,8006,8020,8026", "GCN"),
    ("30", "?", "N..8", "req=01,02", "VAR. COUNT"),
    ("3100-3105", "*?", "N6", "req=01,02 ex=310n", "NET WEIGHT (kg)"),
    ("3110-3115", "*?", "N6", "req=01,02 ex=311n", "LENGTH (m)"),
    ("3120-3125", "*?", "N6", "req=01,02 ex=312n", "WIDTH (m)"),
    ("3130-3135", "*?", "N6", "req=01,02 ex=313n", "HEIGHT (m)"),
    ("3140-3145", "*?", "N6", "req=01,02 ex=314n", "AREA (m²)"),
    ("3150-3155", "*?", "N6", "req=01,02 ex=315n", "NET VOLUME (l)"),
    ("3160-3165", "*?", "N6", "req=01,02 ex=316n", "NET VOLUME (m³)"),
    ("3200-3205", "*?", "N6", "req=01,02 ex=320n", "NET WEIGHT (lb)"),
    ("3210-3215", "*?", "N6", "req=01,02 ex=321n", "LENGTH (in)"),
    ("3220-3225", "*?", "N6", "req=01,02 ex=322n", "LENGTH (ft)"),
    ("3230-3235", "*?", "N6", "req=01,02 ex=323n", "LENGTH (yd)"),
    ("3240-3245", "*?", "N6", "req=01,02 ex=324n", "WIDTH (in)"),
    ("3250-3255", "*?", "N6", "req=01,02 ex=325n", "WIDTH (ft)"),
    ("3260-3265", "*?", "N6", "req=01,02 ex=326n", "WIDTH (yd)"),
    ("3270-3275", "*?", "N6", "req=01,02 ex=327n", "HEIGHT (in)"),
    ("3280-3285", "*?", "N6", "req=01,02 ex=328n", "HEIGHT (ft)"),
    ("3290-3295", "*?", "N6", "req=01,02 ex=329n", "HEIGHT (yd)"),
    ("3300-3305", "*?", "N6", "req=00,01 ex=330n", "GROSS WEIGHT (kg)"),
    ("3310-3315", "*?", "N6", "req=00,01 ex=331n", "LENGTH (m), log"),
    ("3320-3325", "*?", "N6", "req=00,01 ex=332n", "WIDTH (m), log"),
    ("3330-3335", "*?", "N6", "req=00,01 ex=333n", "HEIGHT (m), log"),
    ("3340-3345", "*?", "N6", "req=00,01 ex=334n", "AREA (m²), log"),
    ("3350-3355", "*?", "N6", "req=00,01 ex=335n", "VOLUME (l), log"),
    ("3360-3365", "*?", "N6", "req=00,01 ex=336n", "VOLUME (m³), log"),
    ("3370-3375", "*?", "N6", "req=01 ex=337n", "KG PER m²"),
    ("3400-3405", "*?", "N6", "req=00,01 ex=340n", "GROSS WEIGHT (lb)"),
    ("3410-3415", "*?", "N6", "req=00,01 ex=341n", "LENGTH (in), log"),
    ("3420-3425", "*?", "N6", "req=00,01 ex=342n", "LENGTH (ft), log"),
    ("3430-3435", "*?", "N6", "req=00,01 ex=343n", "LENGTH (yd), log"),
    ("3440-3445", "*?", "N6", "req=00,01 ex=344n", "WIDTH (in), log"),
    ("3450-3455", "*?", "N6", "req=00,01 ex=345n", "WIDTH (ft), log"),
    ("3460-3465", "*?", "N6", "req=00,01 ex=346n", "WIDTH (yd), log"),
    ("3470-3475", "*?", "N6", "req=00,01 ex=347n", "HEIGHT (in), log"),
    ("3480-3485", "*?", "N6", "req=00,01 ex=348n", "HEIGHT (ft), log"),
    ("3490-3495", "*?", "N6", "req=00,01 ex=349n", "HEIGHT (yd), log"),
    ("3500-3505", "*?", "N6", "req=01,02 ex=350n", "AREA (in²)"),
    ("3510-3515", "*?", "N6", "req=01,02 ex=351n", "AREA (ft²)"),
    ("3520-3525", "*?", "N6", "req=01,02 ex=352n", "AREA (yd²)"),
    ("3530-3535", "*?", "N6", "req=00,01 ex=353n", "AREA (in²), log"),
    ("3540-3545", "*?", "N6", "req=00,01 ex=354n", "AREA (ft²), log"),
    ("3550-3555", "*?", "N6", "req=00,01 ex=355n", "AREA (yd²), log"),
    ("3560-3565", "*?", "N6", "req=01,02 ex=356n", "NET WEIGHT (tr oz)"),
    ("3570-3575", "*?", "N6", "req=01,02 ex=357n", "NET VOLUME (oz)"),
    ("3600-3605", "*?", "N6", "req=01,02 ex=360n", "NET VOLUME (qt (US))"),
    ("3610-3615", "*?", "N6", "req=01,02 ex=361n", "NET VOLUME (gal.)"),
    ("3620-3625", "*?", "N6", "req=00,01 ex=362n", "VOLUME (qt (US)), log"),
    ("3630-3635", "*?", "N6", "req=00,01 ex=363n", "VOLUME (gal (US)), log"),
    ("3640-3645", "*?", "N6", "req=01,02 ex=364n", "NET VOLUME (in³)"),
    ("3650-3655", "*?", "N6", "req=01,02 ex=365n", "NET VOLUME (ft³)"),
    ("3660-3665", "*?", "N6", "req=01,02 ex=366n", "NET VOLUME (yd³)"),
    ("3670-3675", "*?", "N6", "req=00,01 ex=367n", "VOLUME (in³), log"),
    ("3680-3685", "*?", "N6", "req=00,01 ex=368n", "VOLUME (ft³), log"),
    ("3690-3695", "*?", "N6", "req=00,01 ex=369n", "VOLUME (yd³), log"),
    ("37", "?", "N..8", "req=00+02,00+8026", "COUNT"),
    ("3900-3909", "?", "N..15", "req=255,8020 ex=390n,391n,394n,8111", "AMOUNT"),
    ("3910-3919", "?", "N3,iso4217 N..15", "req=8020 ex=391n", "AMOUNT"),
    ("3920-3929", "?", "N..15", "req=01+30,01+31nn,01+32nn,01+35nn,01+36nn ex=392n,393n", "PRICE"),
    ("3930-3939", "?", "N3,iso4217 N..15", "req=30,31nn,32nn,35nn,36nn ex=393n", "PRICE"),
    ("3940-3943", "?", "N4", "req=255 ex=394n,8111", "PRCNT OFF"),
    ("3950-3955", "?", "N6", "req=30,31nn,32nn,35nn,36nn ex=392n,393n,395n,8005", "PRICE/UoM"),
    ("400", "?", "X..30", "", "ORDER NUMBER"),
    ("401", "?", "X..30,gcppos1", "dlpkey", "GINC"),
    ("402", "?", "N17,csum,gcppos1", "dlpkey", "GSIN"),
    ("403", "?", "X..30", "req=00", "ROUTE"),
    ("410", "*?", "N13,csum,gcppos1", "", "SHIP TO LOC"),
    ("411", "*?", "N13,csum,gcppos1", "", "BILL TO"),
    ("412", "*?", "N13,csum,gcppos1", "", "PURCHASE FROM"),
    ("413", "*?", "N13,csum,gcppos1", "", "SHIP FOR LOC"),
    ("414", "*?", "N13,csum,gcppos1", "dlpkey=254|7040", "LOC No."),
    ("415", "*?", "N13,csum,gcppos1", "req=8020 dlpkey=8020", "PAY TO"),
    ("416", "*?", "N13,csum,gcppos1", "", "PROD/SERV LOC"),
    ("417", "*?", "N13,csum,gcppos1", "dlpkey=7040", "PARTY"),
    ("420", "?", "X..20", "ex=421", "SHIP TO POST"),
    ("421", "?", "N3,iso3166 X..9", "ex=4307", "SHIP TO POST"),
    ("422", "?", "N3,iso3166", "req=01,02,03,8006,8026 ex=426", "ORIGIN"),
    (
        "423",
        "?",
        "N3,iso3166 [N3],iso3166 [N3],iso3166 [N3],iso3166 [N3],iso3166",
        "req=01,02,03 ex=426",
        "COUNTRY - INITIAL PROCESS",
    ),
    ("424", "?", "N3,iso3166", "req=01,02,03 ex=426", "COUNTRY - PROCESS"),
    (
        "425",
        "?",
        "N3,iso3166 [N3],iso3166 [N3],iso3166 [N3],iso3166 [N3],iso3166",
        "req=01,02,03 ex=426",
        "COUNTRY - DISASSEMBLY",
    ),
    ("426", "?", "N3,iso3166", "req=01,02,03", "COUNTRY - FULL PROCESS"),
    ("427", "?", "X..3", "req=01+422,02+422,03+422", "ORIGIN SUBDIVISION"),
    ("4300", "?", "X..35,pcenc", "req=00", "SHIP TO COMP"),
    ("4301", "?", "X..35,pcenc", "req=00", "SHIP TO NAME"),
    ("4302", "?", "X..70,pcenc", "req=00", "SHIP TO ADD1"),
    ("4303", "?", "X..70,pcenc", "req=4302", "SHIP TO ADD2"),
    ("4304", "?", "X..70,pcenc", "req=00", "SHIP TO SUB"),
    ("4305", "?", "X..70,pcenc", "req=00", "SHIP TO LOC"),
    ("4306", "?", "X..70,pcenc", "req=00", "SHIP TO REG"),
    ("4307", "?", "X2,iso3166alpha2", "req=00", "SHIP TO COUNTRY"),
    ("4308", "?", "X..30", "req=00", "SHIP TO PHONE"),
    ("4309", "?", "N10,latitude N10,longitude", "req=00", "SHIP TO GEO"),
    ("4310", "?", "X..35,pcenc", "req=00", "RTN TO COMP"),
    ("4311", "?", "X..35,pcenc", "req=00", "RTN TO NAME"),
    ("4312", "?", "X..70,pcenc", "req=00", "RTN TO ADD1"),
    ("4313", "?", "X..70,pcenc", "req=4312", "RTN TO ADD2"),
    ("4314", "?", "X..70,pcenc", "req=00", "RTN TO SUB"),
    ("4315", "?", "X..70,pcenc", "req=00", "RTN TO LOC"),
    ("4316", "?", "X..70,pcenc", "req=00", "RTN TO REG"),
    ("4317", "?", "X2,iso3166alpha2", "req=00", "RTN TO COUNTRY"),
    ("4318", "?", "X..20", "req=00", "RTN TO POST"),
    ("4319", "?", "X..30", "req=00", "RTN TO PHONE"),
    ("4320", "?", "X..35,pcenc", "req=00", "SRV DESCRIPTION"),
    ("4321", "?", "N1,yesno", "req=00", "DANGEROUS GOODS"),
    ("4322", "?", "N1,yesno", "req=00", "AUTH TO LEAVE"),
    ("4323", "?", "N1,yesno", "req=00", "SIG REQUIRED"),
    ("4324", "?", "N6,yymmd0 N4,hhmi", "req=00", "NOT BEF DEL DT"),
    ("4325", "?", "N6,yymmd0 N4,hhmi", "req=00", "NOT AFT DEL DT"),
    ("4326", "?", "N6,yymmdd", "req=00", "REL DATE"),
    ("4330", "?", "N6 [X1],hyphen", "req=00 ex=4331", "MAX TEMP F."),
    ("4331", "?", "N6 [X1],hyphen", "req=00 ex=4330", "MAX TEMP C."),
    ("4332", "?", "N6 [X1],hyphen", "req=00 ex=4333", "MIN TEMP F."),
    ("4333", "?", "N6 [X1],hyphen", "req=00 ex=4332", "MIN TEMP C."),
    ("7001", "?", "N13", "req=01,02,8006,8026", "NSN"),
    ("7002", "?", "X..30", "req=01,02", "MEAT CUT"),
    ("7003", "?", "N6,yymmdd N4,hhmi", "req=01,02,03", "EXPIRY TIME"),
    ("7004", "?", "N..4", "req=01+10,03+10", "ACTIVE POTENCY"),
    ("7005", "?", "X..12", "req=01,02", "CATCH AREA"),
    ("7006", "?", "N6,yymmdd", "req=01,02", "FIRST FREEZE DATE"),
    ("7007", "?", "N6,yymmdd [N6],yymmdd", "req=01,02", "HARVEST DATE"),
    ("7008", "?", "X..3", "req=01,02", "AQUATIC SPECIES"),
    ("7009", "?", "X..10", "req=01,02", "FISHING GEAR TYPE"),
    ("7010", "?", "X..2", "req=01,02,03", "PROD METHOD"),
    ("7011", "?", "N6,yymmdd [N4],hhmi", "req=01,02,03", "TEST BY DATE"),
    ("7020", "?", "X..20", "req=01+416,03+416,8006+416", "REFURB LOT"),
    ("7021", "?", "X..20", "req=01,03,8006", "FUNC STAT"),
    ("7022", "?", "X..20", "req=01+7021,03+7021,8006+7021", "REV STAT"),
    ("7023", "?", "X..30,gcppos1", "", "GIAI - ASSEMBLY"),
    ("7030", "?", "N3,iso3166999 X..27", "req=01,02", "PROCESSOR # 0"),
    ("7031", "?", "N3,iso3166999 X..27", "req=01,02", "PROCESSOR # 1"),
    ("7032", "?", "N3,iso3166999 X..27", "req=01,02", "PROCESSOR # 2"),
    ("7033", "?", "N3,iso3166999 X..27", "req=01,02", "PROCESSOR # 3"),
    ("7034", "?", "N3,iso3166999 X..27", "req=01,02", "PROCESSOR # 4"),
    ("7035", "?", "N3,iso3166999 X..27", "req=01,02", "PROCESSOR # 5"),
    ("7036", "?", "N3,iso3166999 X..27", "req=01,02", "PROCESSOR # 6"),
    ("7037", "?", "N3,iso3166999 X..27", "req=01,02", "PROCESSOR # 7"),
    ("7038", "?", "N3,iso3166999 X..27", "req=01,02", "PROCESSOR # 8"),
    ("7039", "?", "N3,iso3166999 X..27", "req=01,02", "PROCESSOR # 9"),
    ("7040", "", "N1 X1 X1 X1,importeridx", "", "UIC+EXT"),
    ("7041", "", "X..4,packagetype", "req=00", "UFRGT UNIT TYPE"),
    ("710", "?", "X..20", "req=01", "NHRN PZN"),
    ("711", "?", "X..20", "req=01", "NHRN CIP"),
    ("712", "?", "X..20", "req=01", "NHRN CN"),
    ("713", "?", "X..20", "req=01", "NHRN DRN"),
    ("714", "?", "X..20", "req=01", "NHRN AIM"),
    ("715", "?", "X..20", "req=01", "NHRN NDC"),
    ("716", "?", "X..20", "req=01", "NHRN AIC"),
    ("717", "?", "X..20", "req=01", "NHRN SRN"),
    ("7230", "?", "X2 X..28", "req=01,8004", "CERT # 1"),
    ("7231", "?", "X2 X..28", "req=01,8004", "CERT # 2"),
    ("7232", "?", "X2 X..28", "req=01,8004", "CERT # 3"),
    ("7233", "?", "X2 X..28", "req=01,8004", "CERT # 4"),
    ("7234", "?", "X2 X..28", "req=01,8004", "CERT # 5"),
    ("7235", "?", "X2 X..28", "req=01,8004", "CERT # 6"),
    ("7236", "?", "X2 X..28", "req=01,8004", "CERT # 7"),
    ("7237", "?", "X2 X..28", "req=01,8004", "CERT # 8"),
    ("7238", "?", "X2 X..28", "req=01,8004", "CERT # 9"),
    ("7239", "?", "X2 X..28", "req=01,8004", "CERT # 10"),
    ("7240", "?", "X..20", "req=01,8006 ex=03", "PROTOCOL"),
    ("7241", "?", "N2,mediatype", "req=8017,8018", "AIDC MEDIA TYPE"),
    ("7242", "?", "X..25", "req=8017,8018", "VCN"),
    ("7250", "?", "N8,yyyymmdd", "req=8018 ex=7251", "DOB"),
    ("7251", "?", "N8,yyyymmdd N4,hhmi", "req=8018 ex=7250", "DOB TIME"),
    ("7252", "?", "N1,iso5218", "req=8018", "BIO SEX"),
    ("7253", "?", "X..40,pcenc", "req=8017,8018 ex=7256,7259", "FAMILY NAME"),
    ("7254", "?", "X..40,pcenc", "req=8017,8018 ex=7256,7259", "GIVEN NAME"),
    ("7255", "?", "X..10", "req=8017,8018 ex=7256,7259", "SUFFIX"),
    ("7256", "?", "X..90,pcenc", "req=8017,8018", "FULL NAME"),
    ("7257", "?", "X..70,pcenc", "req=8018", "PERSON ADDR"),
    ("7258", "?", "X3,posinseqslash", "req=8018+7259", "BIRTH SEQUENCE"),
    ("7259", "?", "X..40,pcenc", "req=8018 ex=7256", "BABY"),
    ("8001", "?", "N4,nonzero N5,nonzero N3,nonzero N1,winding N1", "req=01", "DIMENSIONS"),
    ("8002", "?", "X..20", "", "CMT No."),
    ("8003", "?", "N1,zero N13,csum,gcppos1 [X..16]", "dlpkey", "GRAI"),
    ("8004", "?", "X..30,gcppos1", "dlpkey=7040", "GIAI"),
    ("8005", "?", "N6", "req=01,02", "PRICE PER UNIT"),
    ("8006", "?", "N14,csum,gcppos2 N4,pieceoftotal", "ex=01,03,37 dlpkey=22,10,21", "ITIP"),
    ("8007", "?", "X..34,iban", "req=415", "IBAN"),
    ("8008", "?", "N6,yymmdd N2,hh [N2],mi [N2],ss", "req=01,02,03", "PROD TIME"),
    ("8009", "?", "X..50", "req=00,01,03", "OPTSEN"),
    ("8010", "?", "Y..30,gcppos1", "dlpkey=8011", "CPID"),
    ("8011", "", "N..12,nozeroprefix", "req=8010", "CPID SERIAL"),
    ("8012", "?", "X..20", "req=01,03,8006", "VERSION"),
    ("8013", "?", "X..25,csumalpha,gcppos1", "dlpkey", "GMN"),
    ("8014", "", "X..25,csumalpha,gcppos1,hasnondigit", "req=01", "MUDI"),
    ("8017", "?", "N18,csum,gcppos1", "ex=8018 dlpkey=8019", "GSRN - PROVIDER"),
    ("8018", "?", "N18,csum,gcppos1", "ex=8017 dlpkey=8019", "GSRN - RECIPIENT"),
    ("8019", "", "N..10", "req=8017,8018", "SRIN"),
    ("8020", "", "X..25", "req=415", "REF No."),
    ("8026", "?", "N14,csum,gcppos2 N4,pieceoftotal", "req=37 ex=02,03,8006", "ITIP CONTENT"),
    (
        "8030",
        "?",
        "Z..90",
        "req=00,01+21,03+21,253,255,8003,8004,8006+21,8010+8011,8017,8018",
        "DIGSIG",
    ),
    ("8040", "", "N15", "req=01+21", "IMEI"),
    ("8041", "", "N15", "req=01+21+8040", "IMEI2"),
    ("8042", "", "N32", "req=01+21+8040", "ESIM"),
    ("8043", "", "N18 [N..2]", "req=01+21+8040", "PSIM"),
    ("8110", "?", "X..70,couponcode", "", ""),
    ("8111", "?", "N4", "req=255", "POINTS"),
    ("8112", "?", "X..70,couponposoffer", "", ""),
    ("8200", "", "X..70", "req=01", "PRODUCT URL"),
    ("90", "?", "X..30", "", "INTERNAL"),
    ("91-99", "?", "X..90", "", "INTERNAL"),
)

BUILTIN_RULES = RuleTable(rule for entry in _BUILTIN for rule in _build_rules(*entry))
"""The gateway's own AI rule table."""
