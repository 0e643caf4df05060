"""The built-in GS1 AI table agrees with GS1's Barcode Syntax Dictionary; the linters and checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_gs1_rules
from gateway.domain.barcodes import parse_barcode
from gateway.domain.gs1_rules import (
    BUILTIN_RULES,
    LINTERS,
    UNCHECKED_LINTERS,
    AiRule,
    RuleTable,
    ai_matches,
    check_digit_ok,
    date_problem,
    gs1_check_digit,
    parse_syntax_dictionary,
)
from gateway.errors import ParseError
from gateway.gs1 import BIIP_GS1

DICTIONARY = (
    Path(__file__).resolve().parents[2].parent / "shared/conformance/gs1/gs1-syntax-dictionary.txt"
)


@pytest.fixture(scope="module")
def reference() -> RuleTable:
    if not DICTIONARY.is_file():
        pytest.fail(f"conformance dictionary not found at {DICTIONARY}")
    return load_gs1_rules(DICTIONARY)


def test_builtin_table_covers_exactly_the_dictionary_ais(reference: RuleTable) -> None:
    assert sorted(BUILTIN_RULES) == sorted(reference)
    assert len(BUILTIN_RULES) > 500  # ranges such as 3100-3105 and 91-99 are expanded


def _reference_ais() -> list[str]:
    return sorted(load_gs1_rules(DICTIONARY)) if DICTIONARY.is_file() else []


@pytest.mark.parametrize("ai", _reference_ais())
def test_builtin_rule_agrees_with_dictionary(reference: RuleTable, ai: str) -> None:
    ours, theirs = BUILTIN_RULES.rule(ai), reference.rule(ai)
    assert ours.components == theirs.components, "format"
    assert ours.predefined_length == theirs.predefined_length, "FNC1 need"
    assert ours.dl_attribute == theirs.dl_attribute, "Digital Link attribute flag"
    assert {"csum", "csumalpha"} & ours.linters == {"csum", "csumalpha"} & theirs.linters
    assert ours.req == theirs.req
    assert ours.ex == theirs.ex
    assert ours.dl_qualifiers == theirs.dl_qualifiers
    assert ours == theirs


def test_every_linter_in_the_dictionary_is_enforced_or_listed_as_unchecked(
    reference: RuleTable,
) -> None:
    named = {name for rule in reference.rules() for name in rule.linters}
    assert named <= set(LINTERS) | UNCHECKED_LINTERS
    assert not set(LINTERS) & UNCHECKED_LINTERS


@pytest.mark.parametrize(
    ("ai", "expected"),
    [
        ("00", "N18 csum"),
        ("01", "N14 csum"),
        ("414", "N13 csum"),
        ("253", "N13 csum"),
        ("8017", "N18 csum"),
        ("8018", "N18 csum"),
        ("402", "N17 csum"),
    ],
)
def test_check_digit_ais_are_known(ai: str, expected: str) -> None:
    rule = BUILTIN_RULES.rule(ai)
    first = rule.components[0]
    assert f"{first.kind}{first.max_len} {first.linters[0]}" == expected


def test_grai_has_zero_then_check_digit_then_optional_serial() -> None:
    rule = BUILTIN_RULES.rule("8003")
    assert [(c.kind, c.min_len, c.max_len, c.optional, c.linters) for c in rule.components] == [
        ("N", 1, 1, False, ("zero",)),
        ("N", 13, 13, False, ("csum", "gcppos1")),
        ("X", 1, 16, True, ()),
    ]
    assert not rule.predefined_length


def test_attributes_parse_alternatives_and_patterns() -> None:
    assert BUILTIN_RULES.rule("250").req == ((("01", "21"), ("03", "21"), ("8006", "21")),)
    assert BUILTIN_RULES.rule("3103").ex == ("310n",)
    assert BUILTIN_RULES.rule("01").dl_qualifiers == (("22", "10", "21"), ("235",))
    assert BUILTIN_RULES.rule("00").dl_qualifiers == ((),)
    assert BUILTIN_RULES.rule("10").dl_qualifiers is None


@pytest.mark.parametrize(
    ("ai", "pattern", "matches"),
    [
        ("3103", "310n", True),
        ("3113", "310n", False),
        ("3103", "31nn", True),
        ("31", "31nn", False),
        ("01", "01", True),
        ("010", "01", False),
    ],
)
def test_ai_patterns(ai: str, pattern: str, matches: bool) -> None:
    assert ai_matches(ai, pattern) is matches


@pytest.mark.parametrize(
    ("ais", "error"),
    [
        (["01", "10"], None),
        (["10"], "required AIs for AI (10) are not satisfied"),
        (["01", "02"], "it is invalid to pair AI (02) with AI (01)"),
        (["01", "3103"], None),
        (["01", "3103", "3102"], "it is invalid to pair AI (3103) with AI (3102)"),
        (["01", "250"], "required AIs for AI (250)"),
        (["01", "21", "250"], None),
        (["414", "254"], None),
        (["254"], "required AIs for AI (254)"),
        (["00", "02", "37"], None),
    ],
)
def test_associations(ais: list[str], error: str | None) -> None:
    if error is None:
        BUILTIN_RULES.check_associations(ais)
    else:
        with pytest.raises(ParseError, match=error.replace("(", r"\(").replace(")", r"\)")):
            BUILTIN_RULES.check_associations(ais)


@pytest.mark.parametrize(
    ("ai", "value", "error"),
    [
        ("17", "240229", None),
        ("17", "230229", "illegal day of the month (yymmd0)"),
        ("17", "200600", None),
        ("4326", "200600", "illegal day of the month (yymmdd)"),
        ("7250", "20240229", None),
        ("7250", "21000229", "illegal day of the month (yyyymmdd)"),
        ("7003", "2401012359", None),
        ("7003", "2401012460", "hour and minute (hhmi)"),
        ("8013", "1987654Ad4X4bL5ttr2310c2K", None),
        ("8013", "1987654Ad4X4bL5ttr2310c2L", "check pair is incorrect (csumalpha)"),
        ("8006", "123456789012310102", None),
        ("8006", "123456789012310302", "between 1 and the total (pieceoftotal)"),
        ("8011", "0123", "leading zero is not allowed (nozeroprefix)"),
        ("8007", "GB82WEST12345698765432", None),
        ("8007", "GB83WEST12345698765432", "IBAN check digits are incorrect (iban)"),
        ("4300", "ACME%20Corp", None),
        ("4300", "ACME%2", "not followed by two hex digits (pcenc)"),
        ("4321", "2", "(yesno)"),
        ("8003", "02112345678900ABC", None),
        ("8003", "12112345678900ABC", "(zero)"),
        ("8003", "021123456789001234567890123456789", "too long"),
        ("10", "", "too short"),
        ("10", "A B", "not a CSET 82 character"),
        ("8010", "ab", "not a CSET 39 character"),
    ],
)
def test_check_value(ai: str, value: str, error: str | None) -> None:
    if error is None:
        BUILTIN_RULES.check_value(ai, value)
    else:
        with pytest.raises(ParseError) as caught:
            BUILTIN_RULES.check_value(ai, value)
        assert error in caught.value.reason
        assert f"AI ({ai})" in caught.value.reason


@pytest.mark.parametrize(
    ("date", "day_zero_ok", "ok"),
    [
        ("240229", False, True),
        ("250229", False, False),
        ("250200", True, True),
        ("250200", False, False),
        ("251301", True, False),
        ("250001", True, False),
        ("25013", True, False),
    ],
)
def test_dates(date: str, day_zero_ok: bool, ok: bool) -> None:
    assert (date_problem(date, day_zero_ok=day_zero_ok) is None) is ok


def test_check_digit_helpers() -> None:
    assert gs1_check_digit("0614141123452"[:-1]) == 2
    assert check_digit_ok("80614141123458")
    assert not check_digit_ok("80614141123459")
    assert not check_digit_ok("8")
    assert not check_digit_ok("\uff180614141123458")  # full-width digits are not ASCII


def test_parser_reports_the_bad_line() -> None:
    with pytest.raises(ParseError, match="line 3"):
        parse_syntax_dictionary("# comment\n\n01 *? Q14,csum\n")
    with pytest.raises(ParseError, match="line 1"):
        parse_syntax_dictionary("3105-31 *? N6\n")


def test_missing_dictionary_file_is_a_parse_error(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="syntax dictionary"):
        load_gs1_rules(tmp_path / "absent.txt")


def test_a_site_dictionary_drives_parsing(tmp_path: Path) -> None:
    # A newer dictionary that knows one more AI than the table (AI 96 made a check-digit field).
    site = tmp_path / "site-dictionary.txt"
    site.write_text(
        "01 *? N14,csum dlpkey=22,10,21\n"
        "21    X..20  req=01  # SERIAL\n"
        "96  ? N8,csum  req=01  # FUTURE\n",
        encoding="utf-8",
    )
    table = load_gs1_rules(site)
    assert isinstance(table.rule("96"), AiRule)
    scan = "]C10180614141123458" + "9612345670"
    assert parse_barcode(scan, rules=table, gs1=BIIP_GS1).ais == (
        ("01", "80614141123458"),
        ("96", "12345670"),
    )
    with pytest.raises(ParseError, match=r"AI \(96\): the numeric check digit"):
        parse_barcode("]C10180614141123458" + "9612345671", rules=table, gs1=BIIP_GS1)
    with pytest.raises(ParseError, match=r"unrecognised AI \(10\)|no known AI"):
        parse_barcode("]C10180614141123458" + "10ABC", rules=table, gs1=BIIP_GS1)
