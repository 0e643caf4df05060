"""Recent visits and movements for the page: what the pipeline made, and what it made nothing of."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.domain.epc import decode_epc_or_raw
from gateway.domain.movements import Movement
from gateway.errors import ParseError

DEFAULT_KEEP = 200
# Pipeline notices about a visit or a scan that made no movement, and how to say why.
_REASONS = {
    "stray_tag": "stray: {reason}",
    "passage_reversed": "reversed passage ({direction}): the tag went back the way it came",
    "visit_not_inward": "not an inward passage (direction {direction}, confidence {confidence})",
    "rescan_ignored": "the same item scanned again within the rescan window",
    "duplicate_receipt": "already received for {rma}",
    "epc_undecodable": "EPC not decodable: {reason}",
}


class RecentActivity:
    """The last `keep` movements and the last `keep` visits or scans that made none."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=keep)
        # Kept apart: a busy scan bench must not push the rare stray out of sight.
        self._refusals: deque[dict[str, Any]] = deque(maxlen=keep)
        self.version = 0

    def add_movements(self, movements: Sequence[Movement], seqs: Sequence[int]) -> None:
        """Movements just committed to the outbox, with their sequence numbers."""
        for movement, seq in zip(movements, seqs, strict=False):
            evidence = movement.evidence
            item = movement.item
            self._entries.append(
                {
                    "at_s": movement.occurred_at_s,
                    "station": movement.station,
                    "what": movement.type,
                    "seq": seq,
                    "item": item.epc or item.key,
                    "gtin": item.gtin,
                    "serial": item.serial,
                    "source": evidence.source,
                    "reader": evidence.reader,
                    "zones": list(evidence.zones),
                    "direction": movement.direction,
                    "confidence": evidence.direction_confidence,
                    "reads": evidence.reads,
                    "peak_rssi_dbm": evidence.peak_rssi_dbm,
                    "rma": movement.rma,
                    "expected": movement.expected,
                    "disposition": movement.disposition,
                    "location": movement.location,
                    "reason": None,
                }
            )
        self.version += 1

    def add_notice(
        self, event: str, station: str, fields: Mapping[str, object], at_s: float
    ) -> None:
        """A pipeline notice; the ones about visits or scans that made no movement are kept."""
        template = _REASONS.get(event)
        if template is None:
            return
        safe = {k: fields.get(k, "?") for k in ("reason", "direction", "confidence", "rma")}
        self._refusals.append(
            {
                "at_s": at_s,
                "station": station,
                "what": event,
                "seq": None,
                "item": _item_name(fields),
                "reader": fields.get("reader"),
                "zones": fields.get("zones") or [],
                "direction": fields.get("direction"),
                "confidence": fields.get("confidence"),
                "reads": fields.get("reads"),
                "peak_rssi_dbm": fields.get("peak_rssi_dbm"),
                "reason": template.format(**safe),
            }
        )
        self.version += 1

    def entries(self, limit: int = 2 * DEFAULT_KEEP) -> list[dict[str, Any]]:
        """Movements and refusals, newest first; at most `limit`, half of them for refusals."""
        moved = list(itertools.islice(reversed(self._entries), limit))
        refused = list(itertools.islice(reversed(self._refusals), limit // 2))
        merged = sorted(moved + refused, key=lambda e: e["at_s"], reverse=True)
        if len(merged) <= limit:
            return merged
        # Keep every refusal that fits in half the limit, fill the rest with the newest moves.
        kept = {id(e) for e in refused} | {id(e) for e in moved[: limit - len(refused)]}
        return [e for e in merged if id(e) in kept]

    def find(self, needles: Sequence[str]) -> list[dict[str, Any]]:
        """Entries whose item, GTIN + serial or RMA equals one of the needles, newest first."""
        wanted = {n for n in needles if n}
        return [
            e
            for e in self.entries()
            if e.get("item") in wanted
            or e.get("rma") in wanted
            or f"{e.get('gtin')}:{e.get('serial')}" in wanted
        ]


def _item_name(fields: Mapping[str, object]) -> str:
    epc = fields.get("epc")
    if isinstance(epc, str) and epc:
        try:
            return decode_epc_or_raw(epc).uri
        except ParseError:
            return epc[:128]
    return str(fields.get("item") or "")[:128]
