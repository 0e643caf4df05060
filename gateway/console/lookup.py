"""Expected returns lookup: an RMA, an EPC, or a GTIN with serial; announced? arrived? where?"""

from __future__ import annotations

import re
from typing import Any

from gateway.console.activity import RecentActivity
from gateway.console.tags import TagsInView
from gateway.domain.epc import decode_epc_or_raw
from gateway.domain.expected import ExpectedReturns
from gateway.domain.movements import Item
from gateway.errors import ParseError

_BRACKETED = re.compile(r"^\(01\)(\d{14})\(21\)(.{1,20})$")
_GTIN_SERIAL = re.compile(r"^(\d{8,14})\s+(\S{1,20})$")
_HEX = re.compile(r"^[0-9A-Fa-f]{8,128}$")
QUERY_MAX_CHARS = 200


def lookup(
    query: str,
    registry: ExpectedReturns | None,
    activity: RecentActivity,
    tags: TagsInView,
) -> dict[str, Any]:
    """What the gateway knows of this RMA or item: the announcement, arrivals, where it was seen."""
    text = query.strip()[:QUERY_MAX_CHARS]
    item = query_item(text)
    result: dict[str, Any] = {"query": text, "kind": "rma" if item is None else "item"}
    if item is None:
        rma = registry.describe(text) if registry is not None else None
        result.update(
            announced=rma is not None,
            rma=rma,
            arrived=None if rma is None else any(line["received"] for line in rma["lines"]),
            seen=activity.find([text]),
            in_view=[],
        )
        return result
    match = registry.match(item) if registry is not None else None
    rma = registry.describe(match.rma) if registry is not None and match is not None else None
    line = rma["lines"][match.line] if rma is not None and match is not None else None
    needles = [item.epc or "", f"{item.gtin}:{item.serial}"]
    seen = activity.find(needles)
    result.update(
        item={"epc": item.epc, "gtin": item.gtin, "serial": item.serial},
        announced=match is not None,
        rma=rma,
        line=line,
        arrived=bool(line and line["received"]) or any(e.get("seq") for e in seen),
        seen=seen,
        in_view=[
            list(tag.row())
            for tag in tags.all()
            if (item.epc and tag.uri == item.epc)
            or (item.gtin and tag.gtin == item.gtin and tag.serial == item.serial)
        ],
    )
    return result


def query_item(text: str) -> Item | None:
    """The item a lookup query names (None: the query is an RMA)."""
    return _item(text.strip()[:QUERY_MAX_CHARS])


def _item(text: str) -> Item | None:
    bracketed = _BRACKETED.match(text)
    if bracketed:
        return Item(gtin=bracketed[1], serial=bracketed[2])
    pair = _GTIN_SERIAL.match(text)
    if pair:
        return Item(gtin=pair[1].zfill(14), serial=pair[2])
    if text.startswith("urn:epc:"):
        return Item(epc=text)
    if _HEX.match(text):
        try:
            epc = decode_epc_or_raw(text)
        except ParseError:
            return None
        return Item(epc=epc.uri, gtin=epc.fields.get("gtin"), serial=epc.fields.get("serial"))
    return None
