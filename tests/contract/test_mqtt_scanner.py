"""The `mqtt-scanner` driver: scans from the lane with their ack and receipt, bad ones acked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.domain.events import BarcodeScan
from gateway.readers.base import ReaderItem, WithAck
from gateway.readers.mqtt import MqttScannerDriver, delivery_digest
from gateway.runtime.inbound import Delivery, InboundLane
from gateway.sync.inbox import Inbox
from gateway.sync.topics import Topics
from tests.support.clock import FakeClock

TOPICS = Topics(prefix="returns", site="milan-returns", gateway="dock-3")
START_S = 1_800_000_000.0


def _delivery(acks: list[str], device: str, data: bytes, *, qos: int = 1, mid: int = 1) -> Delivery:
    topic = f"{TOPICS.base}/scans/{device}"
    return Delivery(topic, device, data, mid, qos, False, lambda: acks.append(f"{device}:{mid}"))


async def _take(items: AsyncIterator[ReaderItem], count: int) -> list[ReaderItem]:
    async with asyncio.timeout(5):
        return [await anext(items) for _ in range(count)]


async def test_scans_come_with_their_ack_and_receipt_and_bad_ones_are_acked_at_once() -> None:
    lane: InboundLane[Delivery] = InboundLane()
    acks: list[str] = []
    driver = MqttScannerDriver(
        "handhelds",
        "door-3",
        lane,
        device_stations={"hh-bench": "bench-1"},
        max_scan_chars=16,
        clock=FakeClock(START_S),
    )
    lane.offer(_delivery(acks, "hh-door", b"RMA-1\r\n", mid=1))
    lane.offer(_delivery(acks, "hh-door", b"  ", mid=2))  # empty
    lane.offer(_delivery(acks, "hh-door", b"X" * 17, mid=3))  # too long
    lane.offer(_delivery(acks, "hh-bench", b"DISP-RESTOCK", mid=4))
    lane.offer(_delivery(acks, "hh-bench", b"LOC-1", qos=0, mid=0))
    async with driver:
        items = driver.events()
        first, second, third = await _take(items, 3)
        await items.aclose()
    assert isinstance(first, WithAck)
    assert first.event == BarcodeScan("handhelds", "door-3", "RMA-1", START_S, "hh-door")
    assert first.receipt is not None
    topic = f"{TOPICS.base}/scans/hh-door"
    assert (first.receipt.mid, first.receipt.dup) == (1, False)
    assert first.receipt.digest == delivery_digest(topic, b"RMA-1\r\n")
    assert acks == ["hh-door:2", "hh-door:3"], "refused scans are acked at once, the rest later"
    first.ack()
    assert acks[-1] == "hh-door:1"
    assert isinstance(second, WithAck)
    assert second.event == BarcodeScan("handhelds", "bench-1", "DISP-RESTOCK", START_S, "hh-bench")
    assert third == BarcodeScan("handhelds", "bench-1", "LOC-1", START_S, "hh-bench")
    assert (driver.health.events, driver.health.bad_input) == (3, 2)


async def test_a_device_without_station_is_refused_when_there_is_no_default() -> None:
    lane: InboundLane[Delivery] = InboundLane()
    acks: list[str] = []
    driver = MqttScannerDriver(
        "handhelds", None, lane, device_stations={"hh-1": "door-3"}, clock=FakeClock(START_S)
    )
    lane.offer(_delivery(acks, "hh-9", b"RMA-1", mid=5))
    lane.offer(_delivery(acks, "hh-1", b"RMA-2", mid=6))
    async with driver:
        items = driver.events()
        (only,) = await _take(items, 1)
        await items.aclose()
    assert isinstance(only, WithAck)
    assert only.event == BarcodeScan("handhelds", "door-3", "RMA-2", START_S, "hh-1")
    assert acks == ["hh-9:5"]
    assert driver.health.bad_input == 1


def test_scans_are_subscribed_to_only_with_a_lane() -> None:
    assert TOPICS.scans_filter not in Inbox(TOPICS, None).filters
    assert TOPICS.scans_filter in Inbox(TOPICS, None, InboundLane()).filters
