"""Generators of realistic test input: GS1 scans with valid check digits, replay files."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def gs1_check_digit(body: str) -> str:
    """The GS1 mod-10 check digit for the digits in `body`."""
    total = 0
    for index, char in enumerate(reversed(body)):
        total += int(char) * (3 if index % 2 == 0 else 1)
    return str((10 - total % 10) % 10)


def gtin14(company_and_item: str) -> str:
    """A GTIN-14 (indicator 0) from 12 digits of company prefix and item reference."""
    body = "0" + company_and_item.zfill(12)[:12]
    return body + gs1_check_digit(body)


def item_scan(index: int, *, company: str = "0614141", symbology: str = "]C1") -> str:
    """A GS1-128 scan of a distinct serialised item: GTIN (01) then serial (21)."""
    gtin = gtin14(company + str(10000 + index % 90000)[:5])
    return f"{symbology}01{gtin}21{index:08d}"


def write_jsonl(path: Path, events: Iterable[dict[str, Any]]) -> Path:
    """Write raw events in the replay format."""
    with path.open("w", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps(event) + "\n")
    return path


def scan_events(count: int, *, start: int = 0) -> list[dict[str, Any]]:
    """`count` barcode events of distinct items, without `at` (the replay reader stamps them)."""
    return [{"kind": "barcode", "data": item_scan(start + i)} for i in range(count)]
