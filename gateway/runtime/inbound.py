"""A lane of messages from the broker to one consumer, each to be acknowledged once it is safe.

The daemon makes one and hands it to both ends: the broker link puts (it must never wait) and a
reader driver takes, so neither imports the other. QoS 1 messages are never dropped here: the
broker sends no more than the Receive Maximum (MQTT 5) or its own in-flight limit (3.1.1) before
the gateway acknowledges, and that bounds the lane. QoS 0 messages carry no promise: past
`qos0_max` waiting they are refused, and the caller counts and logs them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

QOS0_WAITING_MAX = 1000


class _Inbound(Protocol):
    @property
    def qos(self) -> int: ...


_M = TypeVar("_M", bound=_Inbound)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message for the consumer: `ack()` PUBACKs it (a no-op for QoS 0); it never raises.

    `sender` is the topic's last level (the device of `scans/{device}`); `dup` is MQTT's DUP flag:
    the broker sent it before, on an earlier connection, and may have been acknowledged already
    if the gateway died between journaling it and sending the PUBACK.
    """

    topic: str
    sender: str
    payload: bytes
    mid: int
    qos: int
    dup: bool
    ack: Callable[[], None]


class InboundLane(Generic[_M]):
    """An unbounded FIFO for QoS 1 messages (the broker bounds them), bounded for QoS 0."""

    def __init__(self, qos0_max: int = QOS0_WAITING_MAX) -> None:
        self._qos0_max = qos0_max
        self._items: deque[_M] = deque()
        self._qos0 = 0
        self._ready = asyncio.Event()
        self.peak = 0

    def __len__(self) -> int:
        """Deliveries waiting."""
        return len(self._items)

    def offer(self, delivery: _M) -> bool:
        """Queue a delivery without waiting; False only for a QoS 0 one past `qos0_max`."""
        if delivery.qos == 0:
            if self._qos0 >= self._qos0_max:
                return False
            self._qos0 += 1
        self._items.append(delivery)
        self.peak = max(self.peak, len(self._items))
        self._ready.set()
        return True

    async def get(self) -> _M:
        """The oldest delivery, waiting for one."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        delivery = self._items.popleft()
        if delivery.qos == 0:
            self._qos0 -= 1
        return delivery
