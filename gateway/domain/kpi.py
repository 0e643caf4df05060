"""Returns KPIs computed at the edge from the movements; pure, time passed in, JSON snapshots.

Definitions (what `KpiState.snapshot_kpis` reports):

- `counts`: movements added per type. A receipt flagged `duplicate` is not a new return: it goes
  to `duplicates` instead. A movement whose `id` was already added (among the last
  `max_recent_ids`) is ignored, so re-feeding movements after a restart does not count twice.
- `dispositions`: inspections per disposition code (`DISP-RESTOCK`/`restock` -> `RESTOCK`;
  no disposition -> `UNSET`).
- `received`: receipts counted in `counts`. `recovered`: received items later restocked or
  inspected `REPAIR`, each receipt counted at most once, so `recovery_rate = recovered / received`
  is in [0, 1] (None before the first receipt). A restock or repair of an item with no pending
  receipt (received before the state began, or evicted) counts in `recovered_unmatched` only.
- `receipt_to_restock_s`: for each restock of an item with a pending receipt, restock time minus
  the item's latest receipt time (negative differences are dropped); over the most recent
  `max_duration_samples` restocks.
- `unexpected_share`: receipts with `expected is False` over `received` (None before any).
- `read_to_publish_latency_s`: over the most recent `max_latency_samples` values recorded.
- Percentiles are nearest-rank over the sorted samples v[1..n]: the p-th percentile is v[k] with
  k = ceil(p * n / 100), so the median (p50) of 4 samples is the 2nd, the p90 of 10 the 9th.
- Cost factors apply to inspections with a disposition that has factors (the GTIN's longest
  configured prefix override first): `handling_cost_avg` is the mean handling cost over those
  inspections; `co2e_avoided_kg` and `recycled_kg` are their sums. All three are None without
  factors; the average is None before the first costed inspection.
- Pending receipts are bounded: entries older than `max_pending_age_s` (by receipt time, checked
  from the oldest inserted) or beyond `max_pending` are dropped and counted in `pending_evicted`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from gateway.domain.epcis import disposition_code
from gateway.domain.movements import Movement
from gateway.domain.wire import rfc3339
from gateway.errors import ConfigError, InputError

SNAPSHOT_VERSION = 1
MOVEMENT_TYPES = ("receipt", "inspection", "restock", "disposal", "rma-complete", "gap")
KNOWN_DISPOSITIONS = ("RESTOCK", "REPAIR", "RECYCLE", "DISPOSE", "DONATE")
UNSET_DISPOSITION = "UNSET"


@dataclass(frozen=True, slots=True)
class Factors:
    """What one return with a given disposition costs and saves."""

    handling_cost: float = 0.0
    co2e_avoided_kg: float = 0.0
    recycled_kg: float = 0.0


@dataclass(frozen=True, slots=True)
class CostFactors:
    """Factors per disposition code, with optional overrides per GTIN prefix and disposition."""

    by_disposition: Mapping[str, Factors] = field(default_factory=dict)
    by_gtin_prefix: Mapping[str, Mapping[str, Factors]] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls,
        dispositions: Mapping[str, Mapping[str, float]],
        gtin_prefixes: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
    ) -> CostFactors:
        """Factors from `{"RESTOCK": {"handling_cost": 2.1}}` and `{"806141": {"RESTOCK": {}}}`.

        An override names only the fields it changes; the rest come from the disposition's factors.
        """
        base: dict[str, Factors] = {}
        for name, values in dispositions.items():
            code = _code(name, f"kpi.factors.{name}")
            base[code] = _factors(values, Factors(), f"kpi.factors.{name}")
        overrides: dict[str, dict[str, Factors]] = {}
        for prefix, per_disposition in (gtin_prefixes or {}).items():
            if not prefix.isdigit() or not 1 <= len(prefix) <= 14:
                raise ConfigError(f"kpi.gtin_prefixes.{prefix}", "not a GTIN prefix (1-14 digits)")
            table: dict[str, Factors] = {}
            for name, values in per_disposition.items():
                key = f"kpi.gtin_prefixes.{prefix}.{name}"
                code = _code(name, key)
                table[code] = _factors(values, base.get(code, Factors()), key)
            overrides[prefix] = table
        return cls(by_disposition=base, by_gtin_prefix=overrides)

    def factors(self, disposition: str, gtin: str | None) -> Factors | None:
        """The factors for a disposition code and GTIN: longest prefix override, else the base."""
        if gtin:
            for length in range(min(len(gtin), 14), 0, -1):
                table = self.by_gtin_prefix.get(gtin[:length])
                if table is not None and disposition in table:
                    return table[disposition]
        return self.by_disposition.get(disposition)


class KpiState:
    """Incremental KPIs over movements (see the module docstring for every definition)."""

    def __init__(
        self,
        factors: CostFactors | None = None,
        *,
        max_pending: int = 100_000,
        max_pending_age_s: float = 30 * 86400.0,
        max_duration_samples: int = 10_000,
        max_latency_samples: int = 1024,
        max_recent_ids: int = 2048,
    ) -> None:
        self.factors = factors
        self.max_pending = max_pending
        self.max_pending_age_s = max_pending_age_s
        self._counts: dict[str, int] = dict.fromkeys(MOVEMENT_TYPES, 0)
        self._dispositions: dict[str, int] = dict.fromkeys(KNOWN_DISPOSITIONS, 0)
        self._duplicates = 0
        self._received = 0
        self._unexpected = 0
        self._recovered = 0
        self._recovered_unmatched = 0
        # item key -> (latest receipt time, already counted as recovered); insertion-ordered.
        self._pending: dict[str, tuple[float, bool]] = {}
        self._pending_evicted = 0
        self._durations: deque[float] = deque(maxlen=max_duration_samples)
        self._latencies: deque[float] = deque(maxlen=max_latency_samples)
        self._latency_total = 0
        self._costed = 0
        self._handling_cost = 0.0
        self._co2e_avoided_kg = 0.0
        self._recycled_kg = 0.0
        self._recent: deque[str] = deque(maxlen=max_recent_ids)
        self._recent_set: set[str] = set()
        self._repeats = 0

    def add(self, movement: Movement, now_s: float) -> None:
        """Count one movement; a repeated id is ignored, a `duplicate` receipt counted apart."""
        if movement.id in self._recent_set:
            self._repeats += 1
            return
        self._remember(movement.id)
        self._evict(now_s)
        if "duplicate" in movement.flags:
            self._duplicates += 1
            return
        self._counts[movement.type] = self._counts.get(movement.type, 0) + 1
        key = movement.item.key
        if movement.type == "receipt":
            self._received += 1
            if movement.expected is False:
                self._unexpected += 1
            # Re-inserting moves the item to the end, keeping the dict ordered by receipt.
            self._pending.pop(key, None)
            self._pending[key] = (movement.occurred_at_s, False)
            self._evict(now_s)
        elif movement.type == "inspection":
            code = disposition_code(movement.disposition) or UNSET_DISPOSITION
            self._dispositions[code] = self._dispositions.get(code, 0) + 1
            if code == "REPAIR":
                self._recover(key)
            self._cost(code, movement.item.gtin)
        elif movement.type == "restock":
            entry = self._pending.get(key)
            self._recover(key)
            self._pending.pop(key, None)
            if entry is not None and movement.occurred_at_s >= entry[0]:
                self._durations.append(movement.occurred_at_s - entry[0])

    def record_latency(self, read_to_publish_s: float) -> None:
        """Record one read-to-publish latency (non-finite values ignored, negative taken as 0)."""
        if not math.isfinite(read_to_publish_s):
            return
        self._latencies.append(max(0.0, read_to_publish_s))
        self._latency_total += 1

    def snapshot_kpis(
        self,
        now_s: float,
        *,
        open_rmas: int = 0,
        oldest_unacked_age_s: float | None = None,
    ) -> dict[str, object]:
        """The KPI message published retained on `{prefix}/{site}/{gateway}/kpi`."""
        durations = sorted(self._durations)
        latencies = sorted(self._latencies)
        has_factors = self.factors is not None
        return {
            "at": rfc3339(now_s),
            "counts": dict(self._counts),
            "duplicates": self._duplicates,
            "dispositions": dict(self._dispositions),
            "received": self._received,
            "recovered": self._recovered,
            "recovered_unmatched": self._recovered_unmatched,
            "recovery_rate": _ratio(self._recovered, self._received),
            "receipt_to_restock_s": {
                "median": _round(nearest_rank(durations, 50)),
                "p90": _round(nearest_rank(durations, 90)),
                "n": len(durations),
            },
            "unexpected_share": _ratio(self._unexpected, self._received),
            "open_rmas": open_rmas,
            "awaiting_restock": len(self._pending),
            "pending_evicted": self._pending_evicted,
            "read_to_publish_latency_s": {
                "p50": _round(nearest_rank(latencies, 50)),
                "p90": _round(nearest_rank(latencies, 90)),
                "p99": _round(nearest_rank(latencies, 99)),
                "n": len(latencies),
                "total": self._latency_total,
            },
            "oldest_unacked_age_s": _round(oldest_unacked_age_s),
            "handling_cost_avg": _round(self._handling_cost / self._costed)
            if has_factors and self._costed
            else None,
            "co2e_avoided_kg": _round(self._co2e_avoided_kg) if has_factors else None,
            "recycled_kg": _round(self._recycled_kg) if has_factors else None,
        }

    def snapshot(self) -> dict[str, object]:
        """The whole state as JSON-safe data; `restore` takes it back."""
        return {
            "version": SNAPSHOT_VERSION,
            "counts": dict(self._counts),
            "dispositions": dict(self._dispositions),
            "duplicates": self._duplicates,
            "received": self._received,
            "unexpected": self._unexpected,
            "recovered": self._recovered,
            "recovered_unmatched": self._recovered_unmatched,
            "pending": [[key, at_s, done] for key, (at_s, done) in self._pending.items()],
            "pending_evicted": self._pending_evicted,
            "durations": list(self._durations),
            "latencies": list(self._latencies),
            "latency_total": self._latency_total,
            "costed": self._costed,
            "handling_cost": self._handling_cost,
            "co2e_avoided_kg": self._co2e_avoided_kg,
            "recycled_kg": self._recycled_kg,
            "recent_ids": list(self._recent),
            "repeats": self._repeats,
        }

    @classmethod
    def restore(
        cls, data: Mapping[str, Any], factors: CostFactors | None = None, **limits: Any
    ) -> KpiState:
        """A state from `snapshot()` output; raises InputError naming what is malformed."""
        if data.get("version") != SNAPSHOT_VERSION:
            raise InputError("kpi snapshot", "unknown version")
        state = cls(factors, **limits)
        state._counts.update(_counter(data.get("counts"), "counts"))
        state._dispositions.update(_counter(data.get("dispositions"), "dispositions"))
        state._duplicates = _int(data, "duplicates")
        state._received = _int(data, "received")
        state._unexpected = _int(data, "unexpected")
        state._recovered = _int(data, "recovered")
        state._recovered_unmatched = _int(data, "recovered_unmatched")
        state._pending_evicted = _int(data, "pending_evicted")
        state._latency_total = _int(data, "latency_total")
        state._costed = _int(data, "costed")
        state._repeats = _int(data, "repeats")
        state._handling_cost = _float(data, "handling_cost")
        state._co2e_avoided_kg = _float(data, "co2e_avoided_kg")
        state._recycled_kg = _float(data, "recycled_kg")
        state._durations.extend(_floats(data.get("durations"), "durations"))
        state._latencies.extend(_floats(data.get("latencies"), "latencies"))
        for entry in _list(data.get("pending"), "pending"):
            if (
                not isinstance(entry, list)
                or len(entry) != 3
                or not isinstance(entry[0], str)
                or not _is_number(entry[1])
                or not isinstance(entry[2], bool)
            ):
                raise InputError("kpi snapshot", "pending: malformed entry")
            state._pending[entry[0]] = (float(entry[1]), entry[2])
        for movement_id in _list(data.get("recent_ids"), "recent_ids"):
            if not isinstance(movement_id, str):
                raise InputError("kpi snapshot", "recent_ids: not a string")
            state._remember(movement_id)
        return state

    def _remember(self, movement_id: str) -> None:
        if self._recent.maxlen is not None and len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(movement_id)
        self._recent_set.add(movement_id)

    def _recover(self, key: str) -> None:
        entry = self._pending.get(key)
        if entry is None:
            self._recovered_unmatched += 1
            return
        if not entry[1]:
            self._recovered += 1
            self._pending[key] = (entry[0], True)

    def _cost(self, code: str, gtin: str | None) -> None:
        if self.factors is None:
            return
        factors = self.factors.factors(code, gtin)
        if factors is None:
            return
        self._costed += 1
        self._handling_cost += factors.handling_cost
        self._co2e_avoided_kg += factors.co2e_avoided_kg
        self._recycled_kg += factors.recycled_kg

    def _evict(self, now_s: float) -> None:
        # Receipts arrive nearly in time order, so the oldest sit at the front of the dict.
        horizon_s = now_s - self.max_pending_age_s
        while self._pending:
            key = next(iter(self._pending))
            if len(self._pending) <= self.max_pending and self._pending[key][0] >= horizon_s:
                break
            del self._pending[key]
            self._pending_evicted += 1


def nearest_rank(sorted_values: list[float], percentile: int) -> float | None:
    """The nearest-rank percentile of ascending values: v[ceil(p * n / 100)] (1-based)."""
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, -(-percentile * n // 100))
    return sorted_values[min(rank, n) - 1]


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _code(name: str, key: str) -> str:
    code = disposition_code(name)
    if code is None:
        raise ConfigError(key, "empty disposition name")
    return code


def _factors(values: Mapping[str, float], base: Factors, key: str) -> Factors:
    known = {f.name for f in fields(Factors)}
    merged = {name: getattr(base, name) for name in known}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{key}.{name}", f"unknown factor; expected one of {sorted(known)}")
        if not _is_number(value) or not math.isfinite(value):
            raise ConfigError(f"{key}.{name}", "not a finite number")
        if name.endswith("_kg") and value < 0:
            raise ConfigError(f"{key}.{name}", "must not be negative")
        merged[name] = float(value)
    return Factors(**merged)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError("kpi snapshot", f"{name}: not a count")
    return value


def _float(data: Mapping[str, Any], name: str) -> float:
    value = data.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InputError("kpi snapshot", f"{name}: not a number")
    return float(value)


def _list(value: object, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise InputError("kpi snapshot", f"{name}: not a list")
    return value


def _floats(value: object, name: str) -> Iterable[float]:
    items = _list(value, name)
    if not all(_is_number(item) for item in items):
        raise InputError("kpi snapshot", f"{name}: not numbers")
    return [float(item) for item in items]


def _counter(value: object, name: str) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise InputError("kpi snapshot", f"{name}: not a table of counts")
    return dict(value)
