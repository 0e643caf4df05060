"""paho's client with a lean path for the forwarder's rows: chunked reads, batched PUBLISHes.

paho handles a QoS 1 publish in Python objects: an `MQTTMessage` with its `MQTTMessageInfo` and a
`threading.Condition`, a queued packet dict, one `send` per packet; and each PUBACK with three
`recv` calls, a `ReasonCode` and a `Properties` object and three locks. Draining a backlog, that was
most of the daemon's CPU, more than the SQLite outbox under it. So, as the RFID path decodes tag
reports itself and keeps sllurp for the rest, this client keeps paho for the connection, the
session, keepalive, subscriptions and every other publish, and does three things itself:

- reads the socket in chunks of up to 64 KiB and serves paho's small reads from them; a small
  packet lying whole in the chunk is framed here and handed to paho as if it had read it;
- encodes the rows' PUBLISH packets (QoS 1, topic and payload as they are) into one buffer that
  goes into paho's own output queue as one opaque packet, so paho still orders and writes every
  byte (partial writes, TLS, keepalive bookkeeping);
- takes the PUBACKs of those rows before paho's bookkeeping (paho has no record of them) and reports
  mid and reason code; a reason code >= 0x80 is a refusal, as paho reports it for its own.

This relies on paho 2.2's private `_sock_recv`, `_packet_read`, `_in_packet`, `_packet_queue`,
`_handle_pubackcomp` and `_mid_generate` (pinned in pyproject). The tests check the bytes against
paho's own encoder, the PUBACK parsing against split and refused acks, and every broker test runs
through this class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

__all__ = ["RECV_CHUNK_B", "LinkClient", "encode_publish_qos1"]

RECV_CHUNK_B = 65536
_PUBLISH_QOS1 = 0x32
_PUBACK = 0x40
# MQTT's packet type nibble for PUBLISH: paho writes any queued packet; it looks at the type only
# to call on_publish for QoS 0 and to close after DISCONNECT.
_PUBLISH_TYPE = 0x30


def encode_publish_qos1(topic: bytes, mid: int, payload: bytes, *, v5: bool) -> bytes:
    """A PUBLISH packet at QoS 1, no retain, no dup, no properties (MQTT 5 or 3.1.1)."""
    out = bytearray()
    _append_publish(out, len(topic).to_bytes(2, "big") + topic, mid, payload, v5)
    return bytes(out)


def _append_publish(out: bytearray, topic_field: bytes, mid: int, payload: bytes, v5: bool) -> None:
    remaining = len(topic_field) + 2 + len(payload) + (1 if v5 else 0)
    out.append(_PUBLISH_QOS1)
    while True:  # the remaining length as a variable byte integer
        byte = remaining & 0x7F
        remaining >>= 7
        if remaining:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            break
    out += topic_field
    out += mid.to_bytes(2, "big")
    if v5:
        out.append(0)  # property length
    out += payload


class LinkClient(paho.Client):
    """A paho client for one link (see the module docstring); rows go through `publish_row`."""

    _chunk = b""
    _chunk_pos = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._v5 = self.protocol == paho.MQTTv5
        self._rows_out = bytearray()
        self._row_mids: set[int] = set()
        self._topic_fields: dict[str, bytes] = {}
        self.on_row_ack: Callable[[int, int], None] | None = None

    # -- rows -----------------------------------------------------------------------------------

    def publish_row(self, topic: str, payload: bytes) -> int:
        """Encode a QoS 1 PUBLISH into the pending batch; return its mid (`queue_rows` sends)."""
        field = self._topic_fields.get(topic)
        if field is None:
            encoded = topic.encode("utf-8")
            if not encoded or b"+" in encoded or b"#" in encoded or len(encoded) > 65535:
                raise ValueError(f"not a topic to publish to: {topic[:200]!r}")
            field = self._topic_fields[topic] = len(encoded).to_bytes(2, "big") + encoded
        mid = self._mid_generate()
        _append_publish(self._rows_out, field, mid, payload, self._v5)
        self._row_mids.add(mid)
        return mid

    def queue_rows(self) -> None:
        """Hand the pending batch to paho's output queue as one packet (paho writes it)."""
        if self._rows_out:
            batch, self._rows_out = self._rows_out, bytearray()
            self._packet_queue(_PUBLISH_TYPE, batch, 0, 1)

    def rows_in_flight(self) -> int:
        """Rows published through `publish_row` and not answered yet."""
        return len(self._row_mids)

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd == "PUBACK" and len(packet) >= 2:
            mid = (packet[0] << 8) | packet[1]
            if mid in self._row_mids and (self._v5 or len(packet) == 2):
                self._row_mids.discard(mid)
                # MQTT 5: no reason code byte means Success; properties (a reason string) follow.
                reason = packet[2] if len(packet) > 2 else 0
                if self.on_row_ack is not None:
                    self.on_row_ack(mid, reason)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_pubackcomp(cmd)

    # -- reading --------------------------------------------------------------------------------

    def buffered(self) -> bool:
        """Whether bytes read from the socket wait to be parsed (the selector will not say)."""
        return self._chunk_pos < len(self._chunk)

    def _packet_read(self) -> MQTTErrorCode:
        chunk = self._chunk
        pos = self._chunk_pos
        in_packet = self._in_packet
        if in_packet["command"] == 0 and pos + 1 < len(chunk) and chunk[pos]:
            length = chunk[pos + 1]
            end = pos + 2 + length
            if length < 128 and end <= len(chunk):
                # Nothing is half read: hand paho the whole packet; it skips its own reads.
                self._chunk_pos = end
                in_packet["command"] = chunk[pos]
                in_packet["have_remaining"] = 1
                in_packet["remaining_length"] = length
                in_packet["packet"] = bytearray(chunk[pos + 2 : end])
        return super()._packet_read()

    def _sock_recv(self, bufsize: int) -> bytes:
        chunk = self._chunk
        pos = self._chunk_pos
        if pos >= len(chunk):
            chunk = super()._sock_recv(max(bufsize, RECV_CHUNK_B))
            if not chunk:
                return chunk  # end of stream: paho drops the link
            pos = 0
            if len(chunk) <= bufsize:
                self._chunk = b""
                self._chunk_pos = 0
                return chunk
        end = pos + bufsize
        self._chunk = chunk
        self._chunk_pos = min(end, len(chunk))
        return chunk[pos:end]
