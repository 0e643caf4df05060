"""Expected returns announced by the WMS: matching items to RMAs, duplicates, completion.

`ExpectedReturns` is the whole registry in tests and small tools, and the daemon's working slice:
the daemon keeps the registry in SQLite, loads the RMAs a batch of events can touch (`load`), and
writes back what the pipeline changed (`take_updates`) with the movements it made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.domain.movements import Item
from gateway.errors import InputError

MAX_RMAS = 200_000
# A lookup a received item needs: ("epc", uri), ("serial", gtin, serial) or ("gtin", gtin).
LookupKey = tuple[str, ...]
MAX_ITEMS_PER_RMA = 10_000
_COMMAND_KEYS = frozenset({"action", "rmas", "rma", "customer", "items", "expires_at"})


@dataclass(frozen=True, slots=True)
class ExpectedLine:
    """One announced line: an EPC, a GTIN with serial, or a GTIN with a quantity."""

    epc: str | None = None
    gtin: str | None = None
    serial: str | None = None
    qty: int = 1


@dataclass(slots=True)
class Rma:
    """An announced return and what has arrived of it so far."""

    rma: str
    customer: str | None
    lines: list[ExpectedLine]
    expires_at_s: float | None
    received: dict[str, int] = field(default_factory=dict)  # item key -> times received
    line_counts: list[int] = field(default_factory=list)
    completed: bool = False

    def is_complete(self) -> bool:
        """Every line received at least its quantity."""
        return all(
            count >= line.qty for count, line in zip(self.line_counts, self.lines, strict=True)
        )


Receipt = Literal["new", "duplicate", "surplus"]


@dataclass(frozen=True, slots=True)
class Match:
    """Where a received item belongs."""

    rma: str
    line: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """One entry of a batch that was not applied: its index in `rmas` and why."""

    index: int
    reason: str
    rma: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form for a command result."""
        return {"index": self.index, "rma": self.rma, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ParsedCommand:
    """An `expected-returns` command checked entry by entry."""

    action: str
    rmas: list[Rma]
    cancel: list[str]
    refused: list[Refusal]


@dataclass(slots=True)
class ExpectedUpdates:
    """What receipts changed in a slice: increments per line and per item, RMAs completed."""

    lines: dict[tuple[str, int], int] = field(default_factory=dict)
    received: dict[tuple[str, str], int] = field(default_factory=dict)
    completed: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.lines or self.received or self.completed)


class ExpectedReturns:
    """Registry (or a loaded slice) of RMAs with indexes by EPC, by GTIN+serial and by GTIN."""

    def __init__(self, *, track_updates: bool = False) -> None:
        self._rmas: dict[str, Rma] = {}
        self._by_epc: dict[str, tuple[str, int]] = {}
        self._by_serial: dict[tuple[str, str], tuple[str, int]] = {}
        self._by_gtin: dict[str, list[tuple[str, int]]] = {}
        self._track = track_updates
        self._updates = ExpectedUpdates()
        self._loaded: set[LookupKey] = set()
        self._next_expiry_s = float("inf")
        # Counts `forget` calls: keys looked up before the last one must be looked up again.
        self.generation = 0

    # -- slice ---------------------------------------------------------------------------------

    def missing(self, keys: Iterable[LookupKey]) -> set[LookupKey]:
        """The keys not looked up yet (a slice answers only for keys it has loaded)."""
        return {key for key in keys if key not in self._loaded}

    def load(self, rmas: Iterable[Rma], keys: Iterable[LookupKey]) -> None:
        """Add RMAs fetched for `keys` (replacing same-named ones) and remember the keys."""
        for rma in rmas:
            self._put(rma)
        self._loaded.update(keys)

    def forget(self) -> None:
        """Drop every loaded RMA and key (after the store changed under the slice)."""
        self._rmas.clear()
        self._by_epc.clear()
        self._by_serial.clear()
        self._by_gtin.clear()
        self._loaded.clear()
        self._next_expiry_s = float("inf")
        self.generation += 1

    def has_updates(self) -> bool:
        """Whether receipts changed something not yet taken by `take_updates`."""
        return bool(self._updates)

    def take_updates(self) -> ExpectedUpdates:
        """What receipts changed since the last call (only with `track_updates`)."""
        updates, self._updates = self._updates, ExpectedUpdates()
        return updates

    def __len__(self) -> int:
        return len(self._rmas)

    def rmas(self) -> list[Rma]:
        """Every RMA held, in announcement order."""
        return list(self._rmas.values())

    def open_count(self) -> int:
        """RMAs announced and not yet complete."""
        return sum(1 for rma in self._rmas.values() if not rma.completed)

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        """Apply an `expected-returns` command (add, replace, cancel); return a result summary.

        All or nothing: any malformed entry raises InputError and changes nothing (the daemon's
        store, `gateway.buffer.expected`, refuses malformed entries one by one instead).
        """
        checked = parse_command(command, strict=True)
        action = checked.action
        if action == "cancel":
            return self._cancel(checked.cancel)
        parsed = checked.rmas
        kept = 0 if action == "replace" else len(self._rmas)
        if kept + len(parsed) > MAX_RMAS:
            raise InputError("expected-returns", f"more than {MAX_RMAS} open RMAs")
        if action == "replace":
            # Only now: a rejected replace must leave the announced RMAs as they were.
            self._rmas.clear()
        for rma in parsed:
            previous = self._rmas.get(rma.rma)
            if previous is not None:
                rma.received = previous.received
                rma.line_counts = previous.line_counts[: len(rma.lines)]
            rma.line_counts += [0] * (len(rma.lines) - len(rma.line_counts))
            self._rmas[rma.rma] = rma
        self._reindex()
        return {
            "action": action,
            "accepted": len(parsed),
            "refused": [r.as_dict() for r in checked.refused],
            "open": self.open_count(),
        }

    def _cancel(self, rma_ids: list[str]) -> dict[str, Any]:
        cancelled = 0
        for rma_id in rma_ids:
            if self._rmas.pop(rma_id, None) is not None:
                cancelled += 1
        self._reindex()
        return {"action": "cancel", "cancelled": cancelled, "open": self.open_count()}

    def match(self, item: Item) -> Match | None:
        """The RMA line this item belongs to, if any was announced."""
        hit = None
        if item.epc is not None:
            hit = self._by_epc.get(item.epc)
        if hit is None and item.gtin is not None and item.serial is not None:
            hit = self._by_serial.get((item.gtin, item.serial))
        if hit is None and item.gtin is not None:
            candidates = self._by_gtin.get(item.gtin, [])
            for rma_id, line in candidates:
                rma = self._rmas[rma_id]
                if rma.line_counts[line] < rma.lines[line].qty:
                    hit = (rma_id, line)
                    break
            if hit is None and candidates:
                hit = candidates[0]
        return None if hit is None else Match(rma=hit[0], line=hit[1])

    def describe(self, rma_id: str) -> dict[str, Any] | None:
        """An announced RMA as plain data: its lines, what arrived of each, complete or not."""
        rma = self._rmas.get(rma_id)
        if rma is None:
            return None
        return {
            "rma": rma.rma,
            "customer": rma.customer,
            "expires_at_s": rma.expires_at_s,
            "completed": rma.completed,
            "lines": [
                {
                    "epc": line.epc,
                    "gtin": line.gtin,
                    "serial": line.serial,
                    "qty": line.qty,
                    "received": count,
                }
                for line, count in zip(rma.lines, rma.line_counts, strict=True)
            ],
        }

    def contains(self, rma_id: str) -> bool:
        """Whether this RMA was announced."""
        return rma_id in self._rmas

    def receive(self, match: Match, item_key: str, *, serialised: bool) -> tuple[Receipt, bool]:
        """Record a received item; return (new, duplicate or surplus, whether the RMA completed).

        A serialised item (EPC or GTIN + serial) arriving again is a duplicate; for a GTIN-only
        line, units beyond the announced quantity are duplicates. A serialised item seen for the
        first time on a line that has all its announced units already (matched by its GTIN alone)
        is surplus: more items than announced; the line's count stays at its quantity.
        """
        rma = self._rmas[match.rma]
        line = rma.lines[match.line]
        seen = rma.received.get(item_key, 0)
        rma.received[item_key] = seen + 1
        updates = self._updates
        if self._track:
            key = (rma.rma, item_key)
            updates.received[key] = updates.received.get(key, 0) + 1
        full = rma.line_counts[match.line] >= line.qty
        if (serialised and seen > 0) or (not serialised and full):
            return "duplicate", False
        if full:
            return "surplus", False
        rma.line_counts[match.line] += 1
        if self._track:
            at = (rma.rma, match.line)
            updates.lines[at] = updates.lines.get(at, 0) + 1
        if not rma.completed and rma.is_complete():
            rma.completed = True
            if self._track:
                updates.completed.add(rma.rma)
            return "new", True
        return "new", False

    def expire(self, now_s: float) -> list[str]:
        """Drop RMAs past their expiry; return their ids (cheap while none is due)."""
        if now_s <= self._next_expiry_s:
            return []
        gone = [
            r.rma
            for r in self._rmas.values()
            if r.expires_at_s is not None and r.expires_at_s < now_s
        ]
        for rma_id in gone:
            del self._rmas[rma_id]
        self._reindex()
        return gone

    def snapshot(self) -> list[dict[str, Any]]:
        """JSON-safe state."""
        return [
            {
                "rma": r.rma,
                "customer": r.customer,
                "expires_at_s": r.expires_at_s,
                "lines": [[ln.epc, ln.gtin, ln.serial, ln.qty] for ln in r.lines],
                "received": r.received,
                "line_counts": r.line_counts,
                "completed": r.completed,
            }
            for r in self._rmas.values()
        ]

    @classmethod
    def restore(cls, data: list[dict[str, Any]]) -> ExpectedReturns:
        """Rebuild from `snapshot()`."""
        registry = cls()
        for entry in data:
            lines = [ExpectedLine(epc=a, gtin=b, serial=c, qty=d) for a, b, c, d in entry["lines"]]
            registry._rmas[entry["rma"]] = Rma(
                rma=entry["rma"],
                customer=entry["customer"],
                lines=lines,
                expires_at_s=entry["expires_at_s"],
                received=dict(entry["received"]),
                line_counts=list(entry["line_counts"]),
                completed=bool(entry["completed"]),
            )
        registry._reindex()
        return registry

    def _reindex(self) -> None:
        self._by_epc.clear()
        self._by_serial.clear()
        self._by_gtin.clear()
        self._next_expiry_s = float("inf")
        for rma in self._rmas.values():
            self._index(rma)

    def _put(self, rma: Rma) -> None:
        """Add or replace one RMA and its index entries without touching the others."""
        previous = self._rmas.pop(rma.rma, None)
        if previous is not None:
            for index, line in enumerate(previous.lines):
                at = (previous.rma, index)
                if line.epc is not None:
                    if self._by_epc.get(line.epc) == at:
                        del self._by_epc[line.epc]
                elif line.gtin is not None and line.serial is not None:
                    if self._by_serial.get((line.gtin, line.serial)) == at:
                        del self._by_serial[(line.gtin, line.serial)]
                elif line.gtin is not None:
                    candidates = self._by_gtin.get(line.gtin, [])
                    if at in candidates:
                        candidates.remove(at)
        if len(rma.line_counts) < len(rma.lines):
            rma.line_counts += [0] * (len(rma.lines) - len(rma.line_counts))
        self._rmas[rma.rma] = rma
        self._index(rma)

    def _index(self, rma: Rma) -> None:
        if rma.expires_at_s is not None:
            self._next_expiry_s = min(self._next_expiry_s, rma.expires_at_s)
        for index, line in enumerate(rma.lines):
            if line.epc is not None:
                self._by_epc[line.epc] = (rma.rma, index)
            elif line.gtin is not None and line.serial is not None:
                self._by_serial[(line.gtin, line.serial)] = (rma.rma, index)
            elif line.gtin is not None:
                self._by_gtin.setdefault(line.gtin, []).append((rma.rma, index))


def lookup_keys(item: Item) -> list[LookupKey]:
    """The lookups `ExpectedReturns.match` may make for this item."""
    keys: list[LookupKey] = []
    if item.epc is not None:
        keys.append(("epc", item.epc))
    if item.gtin is not None:
        if item.serial is not None:
            keys.append(("serial", item.gtin, item.serial))
        keys.append(("gtin", item.gtin))
    return keys


def parse_command(command: dict[str, Any], *, strict: bool = False) -> ParsedCommand:
    """Check a command; entries of `rmas` that are malformed are refused one by one.

    A single-RMA command (`"rma"` at the top) that is malformed raises InputError, as does a
    command whose shape (action, keys, `rmas` not a list) is wrong, and, with `strict`, any
    malformed entry.
    """
    action = _checked_action(command)
    entries = command.get("rmas")
    single = entries is None
    if entries is None:
        entries = [command] if "rma" in command else []
    if not isinstance(entries, list):
        raise InputError("expected-returns", "'rmas' must be a list")
    refused: list[Refusal] = []
    if action == "cancel":
        cancel: list[str] = []
        for index, entry in enumerate(entries):
            rma_id = entry.get("rma") if isinstance(entry, dict) else entry
            if isinstance(rma_id, str) and 0 < len(rma_id) <= 64 and _is_text(rma_id):
                cancel.append(rma_id)
            elif strict:
                continue  # an in-memory cancel has always skipped what cannot be an RMA
            else:
                refused.append(Refusal(index, "an RMA to cancel is a string of 1-64 characters"))
        return ParsedCommand(action, [], cancel, refused)
    rmas: list[Rma] = []
    for index, entry in enumerate(entries):
        if single or strict:
            rmas.append(_parse_rma(entry))
            continue
        try:
            rmas.append(_parse_rma(entry))
        except InputError as exc:
            rma_id = entry.get("rma") if isinstance(entry, dict) else None
            named = rma_id if isinstance(rma_id, str) and _is_text(rma_id) else None
            refused.append(Refusal(index, exc.reason, named[:64] if named else None))
    return ParsedCommand(action, rmas, [], refused)


def _checked_action(command: dict[str, Any]) -> str:
    unknown = sorted(set(command) - _COMMAND_KEYS)
    if unknown:
        raise InputError("expected-returns", f"unknown key {unknown[0][:40]!r}")
    action = command.get("action", "add")
    if not isinstance(action, str) or action not in {"add", "replace", "cancel"}:
        raise InputError("expected-returns", f"unknown action {str(action)[:20]!r}")
    if action != "replace" and "rmas" not in command and "rma" not in command:
        raise InputError("expected-returns", "nothing to do: give 'rmas' (a list) or one 'rma'")
    return str(action)


def _parse_rma(entry: object) -> Rma:
    if not isinstance(entry, dict):
        raise InputError("expected-returns", "each RMA must be an object")
    rma_id = entry.get("rma")
    if not isinstance(rma_id, str) or not 0 < len(rma_id) <= 64 or not _is_text(rma_id):
        raise InputError("expected-returns", "'rma' must be a string of 1-64 characters")
    customer = entry.get("customer")
    if customer is not None and (not isinstance(customer, str) or not _is_text(customer)):
        raise InputError("expected-returns", f"{rma_id}: 'customer' must be a string")
    items = entry.get("items", [])
    if not isinstance(items, list) or len(items) > MAX_ITEMS_PER_RMA:
        raise InputError(
            "expected-returns", f"{rma_id}: 'items' must be a list of at most {MAX_ITEMS_PER_RMA}"
        )
    lines = [_parse_line(rma_id, item) for item in items]
    expires = entry.get("expires_at")
    expires_at_s: float | None = None
    if expires is not None:
        from gateway.domain.wire import parse_rfc3339  # noqa: PLC0415 - avoids an import cycle

        if not isinstance(expires, str):
            raise InputError("expected-returns", f"{rma_id}: 'expires_at' must be RFC 3339")
        expires_at_s = parse_rfc3339(expires)
    return Rma(rma=rma_id, customer=customer, lines=lines, expires_at_s=expires_at_s)


def _parse_line(rma_id: str, item: object) -> ExpectedLine:
    if not isinstance(item, dict):
        raise InputError("expected-returns", f"{rma_id}: each item must be an object")
    epc, gtin, serial, qty = (
        item.get("epc"),
        item.get("gtin"),
        item.get("serial"),
        item.get("qty", 1),
    )
    for name, value in (("epc", epc), ("gtin", gtin), ("serial", serial)):
        if value is not None and not _is_field(value):
            raise InputError(
                "expected-returns", f"{rma_id}: item '{name}' must be a non-empty string"
            )
    if epc is None and gtin is None:
        raise InputError("expected-returns", f"{rma_id}: an item needs 'epc' or 'gtin'")
    if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= 100_000:
        raise InputError("expected-returns", f"{rma_id}: 'qty' must be an integer 1-100000")
    if gtin is not None and len(gtin) < 14 and gtin.isdigit():
        gtin = gtin.zfill(14)
    return ExpectedLine(epc=epc, gtin=gtin, serial=serial, qty=qty)


def _is_field(value: object) -> bool:
    """A non-empty string of at most 128 characters that encodes as UTF-8."""
    return isinstance(value, str) and 0 < len(value) <= 128 and _is_text(value)


def _is_text(value: str) -> bool:
    """Encodable as UTF-8 (JSON lets lone surrogates through; movement messages must encode)."""
    if value.isascii():
        return True  # the common case, without building a bytes copy
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
