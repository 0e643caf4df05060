"""Where the demo's MQTT goes: the broker named, one on localhost, a private mosquitto, or none."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.runtime.loopback import LOOPBACK, free_port, port_answers
from gateway.runtime.mosquitto import Mosquitto, find_mosquitto

BrokerHow = Literal["given", "localhost", "private", "offline"]
DEFAULT_MQTT_PORT = 1883


@dataclass(slots=True)
class Broker:
    """Where the demo's MQTT goes, and the private mosquitto if the demo started one."""

    host: str
    port: int
    how: BrokerHow
    mosquitto: Mosquitto | None = None
    stops: list[float] = field(default_factory=list)

    @property
    def offline(self) -> bool:
        """True when no broker could be had: the gateway buffers only."""
        return self.how == "offline"

    @property
    def running(self) -> bool:
        """Whether the private broker runs (always True for a broker we did not start)."""
        return self.mosquitto is None or self.mosquitto.running

    def sentence(self) -> str:
        """One line telling the user which broker the demo uses and why."""
        return {
            "given": f"MQTT: using the broker you named, {self.host}:{self.port}",
            "localhost": f"MQTT: a broker answers on {self.host}:{self.port}; using it",
            "private": "MQTT: started a private mosquitto on port "
            f"{self.port} (the demo may stop and start it)",
            "offline": "MQTT: no broker on localhost:1883 and no mosquitto installed: running "
            "OFFLINE, buffering every movement in SQLite (install mosquitto to see them delivered)",
        }[self.how]

    def stop(self, *, count: bool = False) -> None:
        """Stop the private broker, if the demo started one; `count` records it as an outage."""
        if self.mosquitto is None or not self.mosquitto.running:
            return
        self.mosquitto.stop()
        if count:
            self.stops.append(time.time())

    def ensure_running(self) -> bool:
        """Start the private broker again if it is stopped; False when it did not come up."""
        if self.mosquitto is None or self.mosquitto.running:
            return True
        try:
            self.mosquitto.start()
        except TimeoutError:
            return False
        return True


def choose_broker(host: str | None, port: int | None, work: Path, *, private_first: bool) -> Broker:
    """The broker named, else localhost:1883, else a private mosquitto, else none (offline).

    With `private_first` (chaos), a private mosquitto is preferred: the demo must be able to
    stop and start the broker it uses, and it never stops one it did not start.
    """
    if host is not None:
        return Broker(host=host, port=port or DEFAULT_MQTT_PORT, how="given")
    binary = find_mosquitto()
    local_port = port or DEFAULT_MQTT_PORT
    if (binary is None or not private_first) and port_answers(LOOPBACK, local_port):
        return Broker(host=LOOPBACK, port=local_port, how="localhost")
    if binary is None:
        return Broker(host=LOOPBACK, port=free_port(), how="offline")
    mosquitto = Mosquitto(work / "mosquitto", binary=binary)
    broker = Broker(host=mosquitto.host, port=mosquitto.port, how="private", mosquitto=mosquitto)
    broker.ensure_running()
    return broker
