"""What people and monitors see of the daemon: health, a snapshot view and systemd's status line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import __version__
from gateway.buffer.store import BufferStats, StallState
from gateway.daemon.shared import Tallies
from gateway.domain.wire import rfc3339
from gateway.runtime.supervisor import ReaderSlot
from gateway.sync.forwarder import Forwarder


@dataclass(slots=True)
class DaemonView:
    """What a person (the demo, `gateway status`) wants to see of a running daemon."""

    readers: list[dict[str, Any]]
    buffer: dict[str, Any]
    forwarder: dict[str, Any]
    counters: dict[str, int]
    movements_by_type: dict[str, int]


def health(
    slots: Sequence[ReaderSlot],
    tallies: Tallies,
    forwarder: Forwarder | None,
    now_mono: float,
    pipeline: Mapping[str, int] | None = None,
    stall: StallState | None = None,
) -> dict[str, object]:
    """Health for the status topic and the health endpoint; `forwarder` is None before start.

    `pipeline` is the flow's lag (`PipelineFlow.lag()`), `stall` the buffer's (`Buffer.stall`),
    both None before start.
    """
    stats = tallies.stats
    return {
        "version": __version__,
        "readers": {slot.reader: _reader_health(slot, tallies, now_mono) for slot in slots},
        "buffer": _stats_dict(stats) if stats is not None else None,
        "pipeline": dict(pipeline) if pipeline is not None else None,
        "buffer_stall": _stall_dict(stall) if stall is not None else None,
        "counters": dict(tallies.counters),
        "broker": _broker_health(forwarder, tallies, now_mono),
        "movements_by_type": dict(tallies.movements_by_type),
        "kpi": tallies.kpi_snapshot,
    }


def view(slots: Sequence[ReaderSlot], tallies: Tallies, forwarder: Forwarder | None) -> DaemonView:
    """A snapshot for people: readers, buffer, forwarder, counters."""
    return DaemonView(
        readers=[_reader_dict(slot) for slot in slots],
        buffer=_stats_dict(tallies.stats) if tallies.stats is not None else {},
        forwarder=_public_fields(forwarder.stats) if forwarder is not None else {},
        counters=dict(tallies.counters),
        movements_by_type=dict(tallies.movements_by_type),
    )


def status_line(
    slots: Sequence[ReaderSlot], stats: BufferStats | None, forwarder: Forwarder | None
) -> str:
    """One line for systemd's STATUS=."""
    pending = stats.pending if stats is not None else 0
    connected = bool(forwarder is not None and forwarder.stats.connected)
    readers = ",".join(f"{slot.reader}:{slot.health().state}" for slot in slots)
    return f"broker={'up' if connected else 'down'} pending={pending} readers={readers}"


def _reader_health(slot: ReaderSlot, tallies: Tallies, now_mono: float) -> dict[str, Any]:
    since = tallies.reader_down_since.get(slot.reader)
    down_for_s = None if since is None else round(now_mono - since, 1)
    return {**_reader_dict(slot), "down_for_s": down_for_s}


def _broker_health(
    forwarder: Forwarder | None, tallies: Tallies, now_mono: float
) -> dict[str, Any] | None:
    if forwarder is None:
        return None
    broker = _public_fields(forwarder.stats)
    since = tallies.broker_down_since
    broker["down_for_s"] = None if since is None else round(now_mono - since, 1)
    return broker


def _reader_dict(slot: ReaderSlot) -> dict[str, Any]:
    health = slot.health()
    return {
        "reader": health.reader,
        "kind": health.kind,
        "state": health.state,
        "events": health.events,
        "bad_input": health.bad_input,
        "reconnects": health.reconnects,
        "last_error": health.last_error,
        "gpi": {
            k.removeprefix("gpi_"): v for k, v in health.detail.items() if k.startswith("gpi_")
        },
        "inventory": health.detail.get("inventory"),
        "inventory_s": float(health.detail["inventory_s"])
        if "inventory_s" in health.detail
        else None,
        "io": _io_summary(health.detail),
    }


def _io_summary(detail: dict[str, str]) -> str | None:
    """GPI levels and the triggered inventory in a few words (the console's reader row)."""
    parts = [
        f"GPI {k.removeprefix('gpi_')} {v}"
        for k, v in sorted(detail.items())
        if k.startswith("gpi_")
    ]
    if "inventory" in detail:
        parts.append(f"inventory {detail['inventory']}")
    if "inventory_s" in detail:
        parts.append(f"{detail['inventory_s']} s inventorying")
    return " · ".join(parts) or None


def _stats_dict(stats: BufferStats) -> dict[str, Any]:
    return {
        "pending": stats.pending,
        "oldest_pending_age_s": stats.oldest_pending_age_s,
        "last_seq": stats.last_seq,
        "used_bytes": stats.used_bytes,
        "budget_bytes": stats.budget_bytes,
        "journal_rows": stats.journal_rows,
        "delivered_total": stats.delivered_total,
        "gaps_total": stats.gaps_total,
        "refused_events_total": stats.refused_events_total,
    }


def _stall_dict(stall: StallState) -> dict[str, Any]:
    return {
        "state": "buffer-stalled" if stall.stalled else "ok",
        "since": None if stall.since_s is None else rfc3339(stall.since_s),
        "for_s": None if stall.for_s is None else round(stall.for_s, 1),
        "reason": stall.reason,
        "stall_seconds_total": round(stall.stall_seconds_total, 3),
        "stalls_total": stall.stalls_total,
        "retries_total": stall.retries_total,
    }


def _public_fields(obj: object) -> dict[str, Any]:
    fields = getattr(obj, "__dataclass_fields__", None)
    if fields is not None:
        return {name: getattr(obj, name) for name in fields}
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
