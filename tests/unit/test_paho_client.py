"""The link's paho client: rows encoded as paho encodes them, acks and packets read in chunks.

The broker tests (forwarder, brokers, TLS, WMS contract) run every publish through this class;
these pin down what a real broker will not do on demand: every remaining-length boundary, and
packets split at every byte or packed many to a read. A socketpair stands for the broker's socket.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.sync.paho_client import RECV_CHUNK_B, LinkClient, encode_publish_qos1

TOPIC = "returns/site-1/gw-1/movements"


def _protocol(v5: bool) -> MQTTProtocolVersion:
    return paho.MQTTv5 if v5 else paho.MQTTv311


def _paho_bytes(v5: bool, mid: int, payload: bytes) -> bytes:
    """What paho itself writes on the wire for this publish (its own encoder)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=_protocol(v5))
    ours, wire = socket.socketpair()
    ours.setblocking(False)
    wire.setblocking(False)
    client._sock = ours  # paho encodes only for a socket; the socketpair is the wire
    try:
        client._send_publish(mid, TOPIC.encode(), payload, 1, False, False)
        out = bytearray()
        while True:
            try:
                data = wire.recv(1 << 20)
            except BlockingIOError:
                data = b""
            out += data
            if client.want_write():
                client.loop_write()
            elif not data:
                return bytes(out)
    finally:
        wire.close()
        ours.close()


def _overhead(v5: bool) -> int:
    return 2 + len(TOPIC) + 2 + (1 if v5 else 0)


@pytest.mark.parametrize("v5", [True, False])
@pytest.mark.parametrize("remaining", [40, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152])
def test_a_row_is_encoded_byte_for_byte_as_paho_encodes_it(v5: bool, remaining: int) -> None:
    payload = bytes(i % 251 for i in range(remaining - _overhead(v5)))
    for mid in (1, 255, 256, 65535):
        assert encode_publish_qos1(TOPIC.encode(), mid, payload, v5=v5) == _paho_bytes(
            v5, mid, payload
        )


@pytest.mark.parametrize("v5", [True, False])
def test_rows_go_to_paho_as_one_queued_batch_in_order(v5: bool) -> None:
    client = LinkClient(CallbackAPIVersion.VERSION2, protocol=_protocol(v5))
    payloads = [f'{{"seq": {n}}}'.encode() for n in range(1, 6)]
    mids = [client.publish_row(TOPIC, p) for p in payloads]
    assert len(set(mids)) == 5
    assert client.rows_in_flight() == 5
    client.queue_rows()
    client.queue_rows()  # nothing new: nothing queued
    assert len(client._out_packet) == 1  # paho's output queue
    expected = b"".join(_paho_bytes(v5, m, p) for m, p in zip(mids, payloads, strict=True))
    assert bytes(client._out_packet[0]["packet"]) == expected


def test_a_wildcard_or_empty_topic_is_refused_before_anything_is_queued() -> None:
    client = LinkClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    for topic in ("", "a/+/b", "a/#"):
        with pytest.raises(ValueError, match="not a topic"):
            client.publish_row(topic, b"{}")
    assert client.rows_in_flight() == 0


class _Wired:
    """A LinkClient whose socket is one end of a socketpair; the test writes the broker's bytes."""

    def __init__(self, v5: bool) -> None:
        self.client = LinkClient(CallbackAPIVersion.VERSION2, protocol=_protocol(v5))
        ours, self.broker = socket.socketpair()
        ours.setblocking(False)
        # No public way to adopt a socket: this is the socket paho's connect() would have made.
        self.client._sock = ours
        self.row_acks: list[tuple[int, int]] = []
        self.paho_acks: list[tuple[int, int]] = []
        self.messages: list[tuple[str, bytes]] = []
        self.client.on_row_ack = lambda mid, reason: self.row_acks.append((mid, reason))
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.paho_acks.append((mid, rc.value))
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))

    def close(self) -> None:
        self.broker.close()
        self.client._sock_close()

    def feed(self, data: bytes, *, pieces: Iterator[int] | None = None) -> None:
        """Send `data` (in pieces of these sizes) and let the client read until nothing is left."""
        sizes = pieces or iter([len(data)])
        pos = 0
        while pos < len(data):
            size = next(sizes, len(data) - pos)
            self.broker.sendall(data[pos : pos + size])
            pos += size
            self.read_all()

    def read_all(self) -> None:
        """Read as the link does: while the socket is readable or read bytes wait to be parsed."""
        sock = self.client.socket()
        assert sock is not None
        while self.client.buffered() or select.select([sock], [], [], 0)[0]:
            self.client.loop_read()


def _puback(mid: int, tail: bytes = b"") -> bytes:
    body = mid.to_bytes(2, "big") + tail
    return bytes([0x40, len(body)]) + body


def _acks_v5(row_mids: list[int], paho_mid: int) -> bytes:
    reason_string = b"\x1f\x00\x0dnot allowed!!"  # property 0x1F, a UTF-8 string of 13 bytes
    return b"".join(
        [
            _puback(row_mids[0]),  # no reason code: Success
            _puback(0x7777),  # nobody's mid: ignored
            _puback(row_mids[1], b"\x10"),  # No matching subscribers: still accepted
            _puback(paho_mid),  # paho's own publish: paho's callback
            _puback(row_mids[2], b"\x87" + bytes([len(reason_string)]) + reason_string),
        ]
    )


def _publish_some(wired: _Wired) -> tuple[list[int], int]:
    rows = [wired.client.publish_row(TOPIC, b"{}") for _ in range(3)]
    info = wired.client.publish("returns/site-1/gw-1/status", b"online", qos=1, retain=True)
    return rows, int(info.mid)


@pytest.mark.parametrize("split", ["whole", "bytewise", "halves"])
def test_row_pubacks_are_taken_with_their_reason_codes_however_they_are_split(
    split: str,
) -> None:
    wired = _Wired(v5=True)
    try:
        rows, paho_mid = _publish_some(wired)
        data = _acks_v5(rows, paho_mid)
        pieces = {
            "whole": None,
            "bytewise": iter([1] * len(data)),
            "halves": iter([len(data) // 2 + 1]),
        }[split]
        wired.feed(data, pieces=pieces)
        assert wired.row_acks == [(rows[0], 0), (rows[1], 0x10), (rows[2], 0x87)]
        assert wired.paho_acks == [(paho_mid, 0)]
        assert wired.client.rows_in_flight() == 0
    finally:
        wired.close()


def test_every_split_point_gives_the_same_acks() -> None:
    for cut in range(1, 40):
        wired = _Wired(v5=True)
        try:
            rows, paho_mid = _publish_some(wired)
            wired.feed(_acks_v5(rows, paho_mid), pieces=iter([cut]))
            assert wired.row_acks == [(rows[0], 0), (rows[1], 0x10), (rows[2], 0x87)], cut
            assert wired.paho_acks == [(paho_mid, 0)], cut
        finally:
            wired.close()


def test_mqtt311_pubacks_carry_no_reason_and_an_ack_for_an_answered_row_is_ignored() -> None:
    wired = _Wired(v5=False)
    try:
        rows, paho_mid = _publish_some(wired)
        wired.feed(b"".join(_puback(m) for m in [*rows, paho_mid, rows[0]]))
        assert wired.row_acks == [(m, 0) for m in rows]
        assert wired.paho_acks == [(paho_mid, 0)]
    finally:
        wired.close()


def test_thousands_of_acks_in_one_read_are_all_parsed() -> None:
    wired = _Wired(v5=True)
    try:
        rows = [wired.client.publish_row(TOPIC, b"{}") for _ in range(5000)]
        wired.feed(b"".join(_puback(m) for m in rows))
        assert [mid for mid, _ in wired.row_acks] == rows
    finally:
        wired.close()


def test_a_message_larger_than_a_chunk_arrives_whole_between_small_packets() -> None:
    wired = _Wired(v5=True)
    try:
        rows = [wired.client.publish_row(TOPIC, b"{}") for _ in range(2)]
        topic = b"returns/site-1/gw-1/cmd/ping"
        payload = bytes(i % 256 for i in range(3 * RECV_CHUNK_B + 17))
        body = len(topic).to_bytes(2, "big") + topic + b"\x00" + payload  # QoS 0, no properties
        remaining = bytearray()
        n = len(body)
        while True:
            remaining.append((n & 0x7F) | (0x80 if n >> 7 else 0))
            n >>= 7
            if not n:
                break
        publish = bytes([0x30]) + bytes(remaining) + body
        data = _puback(rows[0]) + publish + _puback(rows[1])
        wired.feed(data, pieces=iter([5, 1000, RECV_CHUNK_B, 3]))
        assert wired.messages == [(topic.decode(), payload)]
        assert wired.row_acks == [(rows[0], 0), (rows[1], 0)]
    finally:
        wired.close()
