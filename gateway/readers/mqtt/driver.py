"""The `mqtt-scanner` reader: scans published to `scans/{device}`, PUBACKed once journaled.

The daemon's broker link puts each message of `{prefix}/{site}/{gateway}/scans/+` in a lane and
this driver takes them, so it imports nothing of the link: it yields each scan with its `ack`,
which the journal calls after its commit, and a `Receipt` (packet id, digest of topic and
payload) that the journal records in the same transaction: a scan the broker sends again with
DUP set after a crash between that commit and the PUBACK is then acknowledged, not doubled.
A scan that is not one (empty, too long, or from a device with no station) is refused, counted
and acknowledged at once: sending it again would not make it better.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Callable, Mapping
from types import TracebackType
from typing import Protocol, Self

from gateway.domain.events import BarcodeScan
from gateway.logs import get_logger
from gateway.readers.base import ReaderHealth, ReaderItem, Receipt, WithAck
from gateway.runtime.inbound import Delivery

_log = get_logger("readers.mqtt")

DIGEST_BYTES = 16


class Deliveries(Protocol):
    """Where the driver takes messages from (the daemon's `InboundLane`)."""

    async def get(self) -> Delivery:
        """The oldest message, waiting for one."""
        ...


def delivery_digest(topic: str, payload: bytes) -> bytes:
    """What tells a redelivered message from another one that reuses its packet id."""
    return hashlib.blake2b(
        topic.encode("utf-8") + b"\0" + payload, digest_size=DIGEST_BYTES
    ).digest()


class MqttScannerDriver:
    """A reader whose input is the MQTT scans lane; `device_stations` picks each one's station."""

    def __init__(
        self,
        reader_id: str,
        station: str | None,
        deliveries: Deliveries,
        *,
        device_stations: Mapping[str, str] | None = None,
        max_scan_chars: int = 4096,
        clock: Callable[[], float],
    ) -> None:
        self._id = reader_id
        self._station = station
        self._deliveries = deliveries
        self._device_stations = dict(device_stations or {})
        self._max_scan_chars = max_scan_chars
        self._clock = clock
        self._health = ReaderHealth(reader=reader_id, kind="mqtt-scanner")

    @property
    def id(self) -> str:
        """The configured reader id."""
        return self._id

    @property
    def health(self) -> ReaderHealth:
        """Live health of this driver."""
        return self._health

    async def __aenter__(self) -> Self:
        """Nothing to open: the daemon's broker link fills the lane."""
        self._health.state = "connected"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Nothing to close: unacknowledged scans stay with the broker."""
        self._health.state = "idle"

    async def events(self) -> AsyncGenerator[ReaderItem, None]:
        """Yield each scan with its ack and receipt; refused ones are acked and counted."""
        self._health.state = "inventorying"
        while True:
            delivery = await self._deliveries.get()
            scan = self._scan(delivery)
            if scan is None:
                delivery.ack()
                continue
            if delivery.qos == 0:
                yield scan  # no promise made, nothing to acknowledge or record
                continue
            receipt = Receipt(
                delivery.mid, delivery_digest(delivery.topic, delivery.payload), delivery.dup
            )
            yield WithAck(scan, delivery.ack, receipt)

    def _scan(self, delivery: Delivery) -> BarcodeScan | None:
        device = delivery.sender
        text = delivery.payload.decode("utf-8", errors="replace").strip()
        station = self._device_stations.get(device, self._station)
        reason = None
        if station is None:
            reason = "no station for this device"
        elif not text or len(text) > self._max_scan_chars:
            reason = "empty or too long"
        if reason is not None or station is None:
            self._health.bad_input += 1
            _log.warning("mqtt_scan_rejected", reader=self._id, device=device[:64], reason=reason)
            return None
        at_s = self._clock()
        self._health.events += 1
        self._health.last_event_at_s = at_s
        return BarcodeScan(reader=self._id, station=station, data=text, at_s=at_s, device=device)
