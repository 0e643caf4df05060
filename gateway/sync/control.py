"""Publishes that are not new movements: status, KPIs, replies, events, and replayed rows.

They share the window with the movements and go first (replays after resends). Retained messages
are kept per topic and sent again at every connect; the last few events wait out a disconnection.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.domain.wire import rfc3339
from gateway.sync.mqtt import PublishProperties
from gateway.sync.outbox import OutboxRowLike
from gateway.sync.topics import Topics
from gateway.sync.window import Window

MAX_REPLAY_QUEUE = 200_000
MAX_OFFLINE_EVENTS = 100


@dataclass(frozen=True, slots=True)
class Control:
    """One publish that is not a movement (QoS 1 unless said; QoS 0 takes no window room)."""

    topic: str
    payload: bytes
    retain: bool
    properties: PublishProperties | None = None
    qos: int = 1


class ControlQueue:
    """What waits to be published besides new movements, in order."""

    def __init__(self, topics: Topics) -> None:
        self._topics = topics
        self._queue: deque[Control] = deque()
        self._retained: dict[str, bytes] = {}
        self._offline_events: deque[bytes] = deque(maxlen=MAX_OFFLINE_EVENTS)
        self._replay: deque[OutboxRowLike] = deque()

    def put(self, item: Control) -> None:
        """Publish `item` at the next chance on this link."""
        self._queue.append(item)

    def retain(self, topic: str, payload: bytes) -> None:
        """Keep the latest retained payload of `topic` for every later connect."""
        self._retained[topic] = payload

    def keep_event(self, payload: bytes) -> None:
        """Keep an event published while offline (only the last few) for the next connect."""
        self._offline_events.append(payload)

    def link_started(self) -> None:
        """A fresh link: drop what the old one did not send; queue retained and kept events."""
        queue = self._queue
        queue.clear()
        for topic, payload in self._retained.items():
            queue.append(Control(topic, payload, retain=True))
        while self._offline_events:
            event = self._offline_events.popleft()
            queue.append(Control(self._topics.events, event, retain=False))

    def add_replays(self, rows: Sequence[OutboxRowLike]) -> int:
        """Queue rows to send again as they are (bounded); return how many were taken."""
        room = max(0, MAX_REPLAY_QUEUE - len(self._replay))
        taken = list(rows[:room])
        self._replay.extend(taken)
        return len(taken)

    def send(self, publish: Callable[[Control], int], window: Window) -> None:
        """Publish queued control messages while the window has room."""
        queue = self._queue
        while queue and window.has_room():
            item = queue.popleft()
            mid = publish(item)
            if item.qos:
                window.sent_other(mid, item.topic)

    def send_replays(self, publish: Callable[[bytes], int], window: Window) -> int:
        """Publish queued replays while the window has room; return how many."""
        replay = self._replay
        sent = 0
        while replay and window.has_room():
            row = replay.popleft()
            window.sent_other(publish(row.payload), "replay")
            sent += 1
        return sent


def online_status(topics: Topics, at_s: float, health: Mapping[str, object]) -> bytes:
    """The retained `online` status body, with the health fields that do not clash."""
    body: dict[str, object] = {
        "state": "online",
        "gateway": topics.gateway,
        "site": topics.site,
        "at": rfc3339(at_s),
    }
    for key, value in health.items():
        body.setdefault(key, value)
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def offline_status(topics: Topics) -> bytes:
    """The retained `offline` status body (also the Last Will)."""
    body = {"state": "offline", "gateway": topics.gateway, "site": topics.site}
    return json.dumps(body, separators=(",", ":")).encode()
