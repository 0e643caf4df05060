"""What the demo does by itself: four handhelds' scans, and chaos (broker outage, reader drop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.demo.broker import Broker
from gateway.domain.barcodes import gs1_check_digit
from gateway.errors import BrokerUnavailable
from gateway.readers.llrp.scenario import Fault
from gateway.readers.llrp.simulator import LlrpSimulator
from gateway.sync.mqtt import MqttLink
from gateway.sync.settings import LinkSettings

STATIONS = [
    {"id": "door-3", "kind": "receiving"},
    {"id": "bench-1", "kind": "inspection"},
    {"id": "restock-1", "kind": "restock"},
    {"id": "recycle-1", "kind": "disposal"},
]
HANDHELDS = {
    "hh-door": "door-3",
    "hh-bench": "bench-1",
    "hh-restock": "restock-1",
    "hh-recycle": "recycle-1",
}
# The door's stack light: the portal's GPO port for each verdict (README, "Door feedback").
LIGHT_PORTS = {"expected": 1, "unexpected": 2, "problem": 3}
LIGHT_HOLD_S = 4.0
# The recycling handheld speaks MQTT (an `mqtt-scanner` reader); over TCP while no broker answers.
MQTT_HANDHELD = "hh-recycle"
SCANS_PER_S = 4.0
MAX_EVENTS_SHOWN = 6
DISPOSITIONS = ("RESTOCK", "REPAIR", "RECYCLE", "RESTOCK", "DISPOSE")


@dataclass(slots=True)
class Show:
    """What the demo itself did, for the view and the summary."""

    started: float = field(default_factory=time.monotonic)
    scans_sent: int = 0
    reader_drops: int = 0
    events: list[str] = field(default_factory=list)
    finish: asyncio.Event = field(default_factory=asyncio.Event)

    def say(self, text: str) -> None:
        """Remember something that happened, for the view."""
        line = f"{time.monotonic() - self.started:5.0f}s  {text}"
        self.events = [*self.events, line][-MAX_EVENTS_SHOWN:]


class MqttHandheld:
    """A handheld that publishes each scan at QoS 1 to `scans/{device}`; reconnects on demand."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self._broker = broker
        self._topic = topic
        self._link: MqttLink | None = None

    async def send(self, data: str) -> bool:
        """Publish one scan; False when no broker answers (the caller sends it another way)."""
        link = self._link
        if link is None or not link.connected:
            link = MqttLink(
                LinkSettings(
                    self._broker.host,
                    self._broker.port,
                    f"demo-{MQTT_HANDHELD}",
                    session_expiry_s=0,
                    connect_timeout_s=1.0,
                ),
                lambda _event: None,
            )
            try:
                await link.connect()
            except BrokerUnavailable:
                return False
            self._link = link
        try:
            link.publish(self._topic, data.encode(), qos=1)
        except BrokerUnavailable:
            return False
        return True

    async def close(self) -> None:
        """Disconnect, if connected."""
        if self._link is not None:
            await self._link.disconnect()


async def handhelds(port: int, show: Show, mqtt: MqttHandheld | None = None) -> None:
    """Four handhelds: RMAs and untagged items at the door, then bench, restock and recycling."""
    await asyncio.sleep(1.0)
    writers: dict[str, asyncio.StreamWriter] = {}
    try:
        for device in HANDHELDS:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"device:{device}\r\n".encode())
            writers[device] = writer
        for device, data in scan_script():
            if device != MQTT_HANDHELD or mqtt is None or not await mqtt.send(data):
                writers[device].write(f"{data}\r\n".encode())
                await writers[device].drain()
            show.scans_sent += 1
            await asyncio.sleep(1 / SCANS_PER_S)
    finally:
        for writer in writers.values():
            writer.close()
        if mqtt is not None:
            await mqtt.close()


def script_item(n: int) -> tuple[str, str]:
    """GTIN and serial of the n-th item the door's handheld scans."""
    body = "0" + f"614141{n % 1000:06d}"[:12]
    return f"{body}{gs1_check_digit(body)}", f"{n:06d}"


def scan_script() -> Iterator[tuple[str, str]]:
    """(handheld, scan) pairs: an RMA of three items at the door, its bench, then its next place."""
    n = 0
    for rma in range(1, 10_000):
        yield "hh-door", f"RMA-{rma:06d}"
        items = []
        for _ in range(3):
            n += 1
            gtin, serial = script_item(n)
            items.append(f"]C101{gtin}21{serial}")
            yield "hh-door", items[-1]
        yield "hh-door", "RMA-CLOSE"
        disposition = DISPOSITIONS[rma % len(DISPOSITIONS)]
        yield "hh-bench", f"DISP-{disposition}"
        for item in items:
            yield "hh-bench", item
        if disposition in {"RESTOCK", "REPAIR"}:
            yield "hh-restock", f"LOC-A-{rma % 7:02d}-{rma % 3}"
            for item in items:
                yield "hh-restock", item
        else:
            for item in items:
                yield "hh-recycle", item


async def chaos(broker: Broker, simulator: LlrpSimulator, show: Show, duration_s: float) -> None:
    """Stop the broker for a while at a third of the run; drop the reader at two thirds."""
    outage_s = min(12.0, duration_s / 5)
    await asyncio.sleep(duration_s / 3)
    toggle_broker(broker, show)
    await asyncio.sleep(outage_s)
    toggle_broker(broker, show)
    await asyncio.sleep(max(1.0, duration_s * 2 / 3 - duration_s / 3 - outage_s))
    await drop_reader(simulator, show)


def toggle_broker(broker: Broker, show: Show) -> None:
    """Stop the private broker if it runs, else start it again; say what happened."""
    if broker.mosquitto is None:
        show.say("the demo only stops a broker it started itself (use --chaos without a broker)")
        return
    if broker.running:
        broker.stop(count=True)
        show.say("broker STOPPED: movements pile up in the SQLite outbox")
    elif broker.ensure_running():
        show.say("broker started again: the backlog drains, in order, same ids")
    else:
        show.say("broker did not come back within 10 s; press b to try again")


async def drop_reader(simulator: LlrpSimulator, show: Show) -> None:
    """Cut the simulated portal's open LLRP connections; the supervisor reconnects."""
    hit = await simulator.inject(Fault(0.0, "drop"))
    show.reader_drops += 1
    show.say(f"reader connection dropped ({hit} open); the supervisor reconnects with backoff")
