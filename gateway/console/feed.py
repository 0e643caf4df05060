"""The live feed: server-sent events, coalesced to a few messages a second whatever the read rate.

One task ticks every `interval_s`: it takes what changed in the tags-in-view table since the last
tick and the daemon's state, serialises each changed row once, and queues one message per page.
A page that cannot keep up loses queued messages and gets the whole table again (`full`), so a
slow browser costs the daemon a bounded queue, never memory that grows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.console.source import ConsoleSource
from gateway.console.tags import matches
from gateway.logs import get_logger

_log = get_logger("console")
DEFAULT_INTERVAL_S = 0.5
_QUEUE_MAX = 4
_FILTER_MAX = 128
# Recent visits and movements a page gets: scans can outnumber RFID visits, and the page filters.
_ACTIVITY_SENT = 120
# Rows a page gets (the first ones in EPC order that fit its filter): enough to read, cheap to draw.
MAX_ROWS = 300
# Reads per second are measured over at least this long, so a 0.5 s tick does not make them jumpy.
_RATE_WINDOW_S = 2.0


@dataclass(slots=True, eq=False)
class Subscriber:
    """One page's stream: its tag filter, its queue, and whether it must get the whole table."""

    wanted: str
    queue: asyncio.Queue[bytes | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_QUEUE_MAX)
    )
    full: bool = True
    dropped: int = 0
    window: set[str] = field(default_factory=set)

    def offer(self, message: bytes) -> None:
        """Queue a message; if the page is behind, drop it and send everything next tick."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            self.full = True


class LiveFeed:
    """Ticks, builds the state and tag updates, fans them out to every subscribed page."""

    def __init__(
        self,
        source: ConsoleSource,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self.interval_s = interval_s
        self._monotonic = monotonic
        self._clock = clock
        self._subscribers: set[Subscriber] = set()
        self._antenna_reads: dict[tuple[str, int], int] = {}
        self._rates: dict[tuple[str, int], float] = {}
        self._last_tick_s: float | None = None
        self._acks_seen = -1
        self._last_ack_at_s: float | None = None
        self.ticks = 0
        self.messages = 0

    @property
    def clients(self) -> int:
        """Pages connected now."""
        return len(self._subscribers)

    def subscribe(self, wanted: str) -> Subscriber:
        """A new page's stream; its first message carries the whole (filtered) table."""
        subscriber = Subscriber(wanted=wanted.strip()[:_FILTER_MAX])
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a page that went away."""
        self._subscribers.discard(subscriber)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for subscriber in self._subscribers:
            while subscriber.queue.full():
                subscriber.queue.get_nowait()
            subscriber.queue.put_nowait(None)
        self._subscribers.clear()

    async def run(self) -> None:
        """Tick until cancelled, on a fixed schedule (a slow tick does not slow the rate)."""
        next_at = self._monotonic()
        while True:
            self.tick()
            next_at = max(next_at + self.interval_s, self._monotonic())
            await asyncio.sleep(next_at - self._monotonic())

    def tick(self) -> None:
        """One coalesced update for every page."""
        now = self._monotonic()
        changes = self._source.tags.tick(now)
        self._source.tags.record_history(self._clock())
        self._sample_rates(now)
        self.ticks += 1
        if not self._subscribers:
            return
        state = _event("state", self.state())
        everything = self._source.tags.all()
        rows: dict[str, str] = {}
        changed = {tag.epc_hex for tag in changes.changed}
        for subscriber in list(self._subscribers):
            picked = [t for t in everything if matches(t, subscriber.wanted)]
            picked.sort(key=lambda t: t.epc_hex)
            window = {t.epc_hex for t in picked[:MAX_ROWS]}
            if subscriber.full:
                sent = picked[:MAX_ROWS]
                removed: list[str] = []
            else:
                sent = [
                    t
                    for t in picked[:MAX_ROWS]
                    if t.epc_hex in changed or t.epc_hex not in subscriber.window
                ]
                removed = sorted(subscriber.window - window)
            upserts = []
            for tag in sent:
                row = rows.get(tag.epc_hex)
                if row is None:
                    row = rows[tag.epc_hex] = json.dumps(tag.row(), separators=(",", ":"))
                upserts.append(row)
            tags = (
                '{"full":%s,"in_view":%d,"matching":%d,"upsert":[%s],"remove":%s}'  # noqa: UP031 - rows are JSON already
                % (
                    "true" if subscriber.full else "false",
                    changes.in_view,
                    len(picked),
                    ",".join(upserts),
                    json.dumps(removed),
                )
            )
            subscriber.full = False
            subscriber.window = window
            subscriber.offer(state + b"event: tags\ndata: " + tags.encode() + b"\n\n")
            self.messages += 1

    def state(self) -> dict[str, Any]:
        """Readers, link and buffer, recent activity: what the page shows besides the tags."""
        health = self._source.health()
        in_force = self._source.profiles_in_force()
        readers = []
        for reader in (health.get("readers") or {}).values():
            reader_id = reader.get("reader")
            profile = in_force.get(str(reader_id))
            rates = {
                str(port): round(rate, 1)
                for (rid, port), rate in sorted(self._rates.items())
                if rid == reader_id
            }
            readers.append(
                {
                    **{k: reader.get(k) for k in _READER_KEYS},
                    "profile": None if profile is None else f"{profile.name} v{profile.version}",
                    "reads_per_s": rates,
                }
            )
        broker = dict(health.get("broker") or {})
        acks = int(broker.get("delivered") or 0) + int(broker.get("acks_received") or 0)
        if acks != self._acks_seen:
            if self._acks_seen >= 0:
                self._last_ack_at_s = self._clock()
            self._acks_seen = acks
        broker["last_ack_at_s"] = self._last_ack_at_s
        tags = self._source.tags
        return {
            "now_s": self._clock(),
            "readers": readers,
            "broker": broker,
            "buffer": health.get("buffer") or {},
            "kpi": health.get("kpi") or {},
            "tags_in_view": len(tags),
            "tags_evicted": tags.evicted,
            "activity_version": self._source.activity.version,
            "activity": self._source.activity.entries(_ACTIVITY_SENT),
        }

    def _sample_rates(self, now: float) -> None:
        if self._last_tick_s is not None and now - self._last_tick_s < _RATE_WINDOW_S:
            return
        counts = dict(self._source.tags.reads_by_antenna)
        if self._last_tick_s is not None:
            elapsed = now - self._last_tick_s
            self._rates = {
                key: (count - self._antenna_reads.get(key, 0)) / elapsed
                for key, count in counts.items()
            }
        self._antenna_reads = counts
        self._last_tick_s = now


_READER_KEYS = (
    "reader",
    "kind",
    "state",
    "events",
    "bad_input",
    "reconnects",
    "last_error",
    "io",
)


def _event(name: str, body: object) -> bytes:
    return (
        f"event: {name}\ndata: {json.dumps(body, default=str, separators=(',', ':'))}\n\n".encode()
    )
