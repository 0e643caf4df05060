"""A WMS-side MQTT collector for tests: a persistent MQTT 5 session that records every message."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True)
class Received:
    """One message as the WMS got it."""

    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        """The payload as JSON."""
        return json.loads(self.payload)


class Collector:
    """Subscribes with a persistent session (survives its own and the broker's restarts)."""

    def __init__(self, port: int, topics: list[str], client_id: str | None = None) -> None:
        self.port = port
        self.topics = topics
        self.client_id = client_id or f"wms-test-{uuid.uuid4().hex[:8]}"
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = self._client()

    def _client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: self._subscribed.set()
        client.reconnect_delay_set(1, 1)
        client.max_queued_messages_set(0)
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self, timeout_s: float = 10.0) -> Self:
        """Connect (persistent session, 1 h expiry), subscribe, and run paho's thread."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect_async(
            "127.0.0.1", self.port, keepalive=10, clean_start=False, properties=props
        )
        self.client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise AssertionError("collector could not subscribe")
        return self

    def stop(self) -> None:
        """Disconnect and stop paho's thread (the session stays on the broker)."""
        self.client.disconnect()
        self.client.loop_stop()

    def prime(self) -> None:
        """Create the persistent session and subscription now, then go away."""
        self.start()
        self.stop()
        self._subscribed.clear()
        self.client = self._client()

    def received(self, suffix: str = "/movements") -> list[Received]:
        """Messages so far whose topic ends with `suffix`."""
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, predicate: Any, timeout_s: float, what: str) -> None:
        """Wait until predicate(self) holds, or fail naming what was awaited."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")

    def distinct_ids(self) -> set[str]:
        """Movement ids received (JSON format)."""
        return {m.json()["id"] for m in self.received()}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publish(port: int, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
    """Publish one message and wait for it to be sent."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def retained(port: int, topic: str, timeout_s: float = 5.0) -> bytes | None:
    """The retained message on a topic, or None."""
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(bytes(msg.payload))
            done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(topic, 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        done.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0] if got else None
