"""Scans per second through parse_barcode, per kind of code, against what it calls in biip.

The baseline of each kind is the biip entry point the product calls for it (GS1 element strings:
`GS1ElementString.extract` per AI; Digital Link: `GS1DigitalLinkURI.parse`), or where the product
calls no biip, the nearest biip call (EAN-13: `Gtin.parse`) or the bare regexes (site codes).
Same scans, same process, alternated rounds, medians; prints one JSON object with `results`.
Goal: parse_barcode at least 0.5 of its biip baseline.

    .venv/bin/python bench/bench_scans.py [--quick] [--scans N] [--rounds N] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable

from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_element_strings import GS1ElementString
from biip.gtin import Gtin

from gateway.domain.barcodes import DEFAULT_PATTERNS, parse_barcode
from gateway.domain.gs1_rules import gs1_check_digit
from gateway.errors import ParseError
from gateway.gs1 import BIIP_GS1

GS = "\x1d"


def _with_check(payload: str) -> str:
    return payload + str(gs1_check_digit(payload))


def make_scans(count: int, seed: int) -> list[str]:
    """A returns-dock mix: GS1 items in several carriers, containers, RMA and control codes."""
    rng = random.Random(seed)
    scans: list[str] = []
    for n in range(count):
        gtin = _with_check(f"0{rng.randrange(10**12):012d}")
        roll = rng.random()
        if roll < 0.30:
            scans.append(f"]C101{gtin}21{rng.randrange(10**8)}")
        elif roll < 0.40:
            month = rng.randrange(1, 13)
            expiry = f"{rng.randrange(24, 30)}{month:02d}00"
            scans.append(f"]d201{gtin}17{expiry}10L{n % 997}{GS}21S{n}")
        elif roll < 0.45:
            scans.append(f"]Q1https://id.gs1.org/01/{gtin}/21/{n}")
        elif roll < 0.55:
            scans.append(f"]E0{gtin[1:]}")
        elif roll < 0.60:
            scans.append("]C100" + _with_check(f"0{rng.randrange(10**16):016d}"))
        elif roll < 0.62:
            grai = "0" + _with_check(f"{rng.randrange(10**12):012d}") + f"R{n}"
            scans.append(f"]C18003{grai}")
        elif roll < 0.77:
            scans.append(f"RMA-{rng.randrange(10**6):06d}")
        elif roll < 0.79:
            scans.append("RMA-CLOSE")
        elif roll < 0.89:
            scans.append(
                "DISP-" + rng.choice(("RESTOCK", "REPAIR", "RECYCLE", "DISPOSE", "DONATE"))
            )
        elif roll < 0.95:
            scans.append(f"LOC-A{rng.randrange(100):02d}-{rng.randrange(10)}")
        else:
            gln = _with_check(f"{rng.randrange(10**12):012d}")
            scans.append(f"]C1414{gln}254B{rng.randrange(100)}")
    return scans


def _rate(fn: Callable[[str], object], scans: list[str]) -> float:
    started = time.perf_counter()
    for scan in scans:
        fn(scan)
    return len(scans) / (time.perf_counter() - started)


def _ours(scan: str) -> object:
    try:
        return parse_barcode(scan, gs1=BIIP_GS1)
    except ParseError as exc:
        return exc


def _extract_all(scan: str) -> object:
    """biip's element-string extractor over the AI data: what parse_barcode calls per AI."""
    data, pos, out = scan[3:], 0, []
    while pos < len(data):
        element = GS1ElementString.extract(data[pos:])
        out.append(element)
        pos += len(element.ai.ai) + len(element.value)
        if pos < len(data) and data[pos] == GS:
            pos += 1
    return out


def _digital_link(scan: str) -> object:
    return GS1DigitalLinkURI.parse(scan[3:])


def _gtin(scan: str) -> object:
    return Gtin.parse(scan[3:])


def _patterns(scan: str) -> object:
    p = DEFAULT_PATTERNS
    for pattern in (p.rma_close, p.rma, p.disposition, p.location):
        match = pattern.fullmatch(scan)
        if match is not None:
            return match
    return None


# Kind of code -> (how it is recognised, the baseline: what the product calls for it, its name).
KINDS: dict[str, tuple[Callable[[str], bool], Callable[[str], object], str]] = {
    "GS1 element strings (]C1, ]d2)": (
        lambda s: s.startswith(("]C1", "]d2")),
        _extract_all,
        "biip GS1ElementString.extract per AI",
    ),
    "GS1 Digital Link (]Q1)": (
        lambda s: s.startswith("]Q1"),
        _digital_link,
        "biip GS1DigitalLinkURI.parse",
    ),
    "EAN-13 (]E0)": (
        lambda s: s.startswith("]E0"),
        _gtin,
        "biip Gtin.parse (the product checks the digits itself)",
    ),
    "site codes (RMA, DISP, LOC; regex only, no biip)": (
        lambda s: not s.startswith("]"),
        _patterns,
        "the same compiled regexes, bare",
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4,000 scans, 3 rounds")
    parser.add_argument("--scans", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    count, rounds = (4_000, 3) if args.quick else (args.scans, args.rounds)
    scans = make_scans(count, args.seed)
    rejected = [scan for scan in scans if not _accepted(scan)]
    if rejected:
        print(json.dumps({"error": "generated scans rejected", "examples": rejected[:5]}))
        return 1
    results = []
    for kind, (is_kind, baseline, baseline_name) in KINDS.items():
        subset = [scan for scan in scans if is_kind(scan)]
        ours: list[float] = []
        bare: list[float] = []
        for _ in range(rounds):  # alternated: baseline, product, baseline, product, ...
            bare.append(_rate(baseline, subset))
            ours.append(_rate(_ours, subset))
        product, base = statistics.median(ours), statistics.median(bare)
        biip_based = "no biip" not in kind
        results.append(
            {
                "name": f"parse_barcode, {kind} ({len(subset):,} scans)",
                "value": round(product),
                "unit": "scans/s",
                "baseline": round(base),
                "baseline_unit": f"scans/s {baseline_name}",
                "ratio": round(product / base, 3),
                "goal": ">= 0.5 of biip" if biip_based else "",
                "pass": product / base >= 0.5 if biip_based else None,
                "note": (
                    f"scans, {kind}: parse_barcode (symbology, strictness rules, domain value; "
                    f"biip behind gateway.gs1) vs "
                    f"{baseline_name} on the same scans in the same process; medians of "
                    f"{rounds} alternated rounds"
                ),
            }
        )
    kinds = Counter(parse_barcode(scan, gs1=BIIP_GS1).kind for scan in scans)
    print(
        json.dumps(
            {
                "benchmark": "scans",
                "scans": count,
                "rounds": rounds,
                "mix": dict(sorted(kinds.items())),
                "python": sys.version.split()[0],
                "results": results,
            },
            indent=2,
        )
    )
    return 0


def _accepted(scan: str) -> bool:
    try:
        parse_barcode(scan, gs1=BIIP_GS1)
    except ParseError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
