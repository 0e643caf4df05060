"""Scans per second through parse_barcode (biip + strictness layer) against bare biip.parse.

Both run on the same realistic mix of dock scans in the same process, alternating rounds, best
round kept for each; prints one JSON object. Goal: parse_barcode at least 0.5 of bare biip.

    .venv/bin/python bench/bench_scans.py [--quick] [--scans N] [--rounds N] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable

import biip

from gateway.domain.barcodes import parse_barcode
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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 scans, 2 rounds")
    parser.add_argument("--scans", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    count, rounds = (2_000, 2) if args.quick else (args.scans, args.rounds)
    scans = make_scans(count, args.seed)
    rejected = [scan for scan in scans if not _accepted(scan)]
    if rejected:
        print(json.dumps({"error": "generated scans rejected", "examples": rejected[:5]}))
        return 1
    # GS1-only subset too: on RMA and control codes biip.parse tries every parser and fails,
    # which flatters the whole-mix ratio.
    gs1 = [scan for scan in scans if scan.startswith("]")]
    ours: list[float] = []
    bare: list[float] = []
    ours_gs1: list[float] = []
    bare_gs1: list[float] = []
    for _ in range(rounds):
        bare.append(_rate(biip.parse, scans))
        ours.append(_rate(_ours, scans))
        bare_gs1.append(_rate(biip.parse, gs1))
        ours_gs1.append(_rate(_ours, gs1))
    kinds = Counter(parse_barcode(scan, gs1=BIIP_GS1).kind for scan in scans)
    ratio = max(ours) / max(bare)
    print(
        json.dumps(
            {
                "benchmark": "scans",
                "scans": count,
                "rounds": rounds,
                "mix": dict(sorted(kinds.items())),
                "parse_barcode_scans_per_s": round(max(ours)),
                "biip_parse_scans_per_s": round(max(bare)),
                "ratio": round(ratio, 3),
                "gs1_only_scans": len(gs1),
                "gs1_only_parse_barcode_scans_per_s": round(max(ours_gs1)),
                "gs1_only_biip_parse_scans_per_s": round(max(bare_gs1)),
                "gs1_only_ratio": round(max(ours_gs1) / max(bare_gs1), 3),
                "goal_ratio": 0.5,
                "goal_met": ratio >= 0.5,
                "python": sys.version.split()[0],
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
