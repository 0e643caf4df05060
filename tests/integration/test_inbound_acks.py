"""Incoming messages are PUBACKed once safe (issue 20): manual ack, Receive Maximum, DUP, QoS 0.

Against a real mosquitto: a command whose handling fails is not acknowledged and comes again, with
DUP, on the next connection of the session; the broker sends no more than `receive_maximum`
before the gateway's acks. In process: a redelivered scan already journaled is acknowledged and
not journaled again, across a restart too; QoS 0 messages past the bound are counted, QoS 1
never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import MqttSection, load_config
from gateway.daemon.lifecycle import Daemon
from gateway.errors import GatewayError
from gateway.readers.mqtt import delivery_digest
from gateway.runtime.inbound import Delivery, InboundLane
from gateway.runtime.loopback import free_port
from gateway.sync.forwarder import Forwarder, IncomingMessage, OutboxRowLike
from gateway.sync.inbox import Inbox
from gateway.sync.mqtt import Message
from gateway.sync.topics import Topics
from tests.support.broker import Mosquitto
from tests.support.daemon import write_config
from tests.support.scans import item_scan
from tests.support.wms import publish

TOPICS = Topics(prefix="returns", site="milan-returns", gateway="dock-3")
CLIENT_ID = "test-gw-inbound"


class _Outbox:
    """An empty outbox: these tests are about what comes in."""

    async def pending(self, after_seq: int, limit: int) -> Sequence[OutboxRowLike]:
        return []

    async def mark_delivered(self, seqs: Sequence[int]) -> int:
        return 0

    async def mark_delivered_ids(self, ids: Sequence[str]) -> int:
        return 0

    async def mark_delivered_upto(self, seq: int) -> int:
        return 0


def _forwarder(
    port: int,
    on_message: Callable[[IncomingMessage], Awaitable[None]] | None = None,
    scans: InboundLane[Delivery] | None = None,
    **mqtt: object,
) -> Forwarder:
    section = MqttSection.model_validate(
        {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, **mqtt}
    )
    return Forwarder(
        _Outbox(),
        section.forwarder_settings(CLIENT_ID),
        TOPICS,
        health=dict,
        on_message=on_message,
        scans=scans,
    )


@contextlib.asynccontextmanager
async def _running(forwarder: Forwarder) -> AsyncIterator[Forwarder]:
    task = asyncio.create_task(forwarder.run(), name="forwarder")
    try:
        await _until(lambda: forwarder.stats.connected, 10, "connected")
        yield forwarder
    finally:
        await forwarder.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_command_whose_handling_fails_is_not_acked_and_comes_again(
    broker: Mosquitto,
) -> None:
    got: list[Message] = []

    async def failing(message: IncomingMessage) -> None:
        got.append(message)
        # Not the buffer: a buffer that fails for good ends the run (a stall is waited out).
        raise GatewayError("the profile switch failed half-way")

    async def working(message: IncomingMessage) -> None:
        got.append(message)

    # The session and its subscriptions exist, then the WMS sends; the buffer fails under it.
    async with _running(_forwarder(broker.port, failing)):
        await asyncio.to_thread(publish, broker.port, TOPICS.cmd("replay"), b'{"from_seq": 1}')
        await _until(lambda: len(got) == 1, 10, "the command")
    assert not got[0].dup
    async with _running(_forwarder(broker.port, working)):
        await _until(lambda: len(got) == 2, 10, "the command again")
        await asyncio.sleep(0.3)  # its PUBACK reaches the broker before DISCONNECT
    assert (got[1].topic, got[1].payload, got[1].dup) == (got[0].topic, got[0].payload, True)
    async with _running(_forwarder(broker.port, working)):
        await asyncio.sleep(1.0)
    assert len(got) == 2, "an acknowledged command came a third time"


async def test_the_broker_sends_no_more_than_the_receive_maximum_before_our_acks(
    broker: Mosquitto,
) -> None:
    scans: InboundLane[Delivery] = InboundLane()
    async with _running(_forwarder(broker.port, scans=scans, receive_maximum=5)):
        await asyncio.to_thread(_publish_many, broker.port, 20)
        await _until(lambda: len(scans) == 5, 10, "the first five")
        await asyncio.sleep(0.5)
        assert len(scans) == 5, "the broker sent past the Receive Maximum"
        taken: list[bytes] = []
        while len(taken) < 20:
            async with asyncio.timeout(10):
                delivery = await scans.get()
            delivery.ack()
            taken.append(delivery.payload)
    assert taken == [f"scan-{i}".encode() for i in range(20)], "in order, each once"


async def test_never_more_held_than_the_receive_maximum_whatever_the_broker_sends(
    broker: Mosquitto,
) -> None:
    # mosquitto 2.0.11 gives back two of its send quota for each PUBACK: without the link's own
    # limit, a slow consumer that acks one at a time is sent more and more.
    scans: InboundLane[Delivery] = InboundLane()
    async with _running(_forwarder(broker.port, scans=scans, receive_maximum=5)):
        await asyncio.to_thread(_publish_many, broker.port, 40)
        await _until(lambda: len(scans) == 5, 10, "the first five")
        taken: list[bytes] = []
        held_most = 0
        while len(taken) < 40:
            async with asyncio.timeout(10):
                delivery = await scans.get()
            delivery.ack()
            taken.append(delivery.payload)
            await asyncio.sleep(0.05)  # a slow consumer: the broker has time to send more
            held_most = max(held_most, len(scans))
    assert held_most <= 5, f"{held_most} messages held past a Receive Maximum of 5"
    assert taken == [f"scan-{i}".encode() for i in range(40)], "in order, each once"


def _publish_many(port: int, count: int) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [
            client.publish(f"{TOPICS.base}/scans/hh-1", f"scan-{i}".encode(), qos=1)
            for i in range(count)
        ]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_qos0_past_the_bound_is_dropped_and_counted_qos1_never() -> None:
    scans: InboundLane[Delivery] = InboundLane(qos0_max=3)
    inbox = Inbox(TOPICS, None, scans)
    topic = f"{TOPICS.base}/scans/hh-1"
    for _ in range(5):
        inbox.route(Message(topic, b"x", mid=0, qos=0))
    assert (len(scans), inbox.dropped) == (3, 2)
    for i in range(100):
        inbox.route(Message(topic, b"x", mid=i + 1, qos=1))
    assert (len(scans), inbox.dropped) == (103, 2)
    inbox.route(Message(f"{TOPICS.base}/elsewhere", b"x", mid=200, qos=1))
    assert inbox.unexpected == 1  # acknowledged at once (no link here: nothing sent)


async def test_a_redelivered_scan_already_journaled_is_acked_not_journaled_again(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path / "gateway.toml",
        broker_port=free_port(),  # no broker: the scans are put in the lane by the test
        state_dir=tmp_path / "state",
        stations=[{"id": "door-3", "kind": "receiving"}],
        readers=[{"kind": "mqtt-scanner", "id": "handhelds", "station": "door-3"}],
    )
    acks: list[int] = []
    topic = f"{TOPICS.base}/scans/hh-1"

    def delivery(mid: int, data: str, *, dup: bool) -> Delivery:
        payload = data.encode()
        return Delivery(topic, "hh-1", payload, mid, 1, dup, lambda: acks.append(mid))

    async with _daemon(config) as lane:
        lane.offer(delivery(7, item_scan(1), dup=False))
        await _until(lambda: acks == [7], 10, "the first ack")
        lane.offer(delivery(7, item_scan(1), dup=True))  # its PUBACK was lost: the same scan
        lane.offer(delivery(7, item_scan(2), dup=True))  # mid 7 again, another message
        lane.offer(delivery(8, item_scan(3), dup=True))  # sent before, never journaled
        lane.offer(delivery(9, item_scan(4), dup=False))
        lane.offer(delivery(9, item_scan(4), dup=True))  # in the same batch as the first copy
        await _until(lambda: len(acks) == 6, 10, "every ack")
    assert _journal(tmp_path) == [item_scan(i) for i in (1, 2, 3, 4)]
    with sqlite3.connect(tmp_path / "state" / "buffer.sqlite3") as db:
        seen = dict(db.execute("SELECT mid, digest FROM inbound_seen").fetchall())
    assert seen == {
        7: delivery_digest(topic, item_scan(2).encode()),
        8: delivery_digest(topic, item_scan(3).encode()),
        9: delivery_digest(topic, item_scan(4).encode()),
    }

    async with _daemon(config) as lane:  # after a restart, the record is in the file
        lane.offer(delivery(8, item_scan(3), dup=True))
        lane.offer(delivery(8, item_scan(3), dup=False))  # mid reused by a new scan: kept
        await _until(lambda: len(acks) == 8, 10, "the acks after the restart")
    assert _journal(tmp_path) == [item_scan(i) for i in (1, 2, 3, 4, 3)]


@contextlib.asynccontextmanager
async def _daemon(config: Path) -> AsyncIterator[InboundLane[Delivery]]:
    daemon = Daemon(load_config(config), install_signals=False)
    runner = asyncio.create_task(daemon.run(), name="daemon")
    try:
        await _until(lambda: daemon._running is not None, 10, "the daemon running")
        assert daemon._running is not None
        lane = daemon._running.scans
        assert lane is not None
        yield lane
    finally:
        daemon.stop()
        assert await asyncio.wait_for(runner, 15) == 0


def _journal(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "state" / "buffer.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT data FROM journal ORDER BY id")]
