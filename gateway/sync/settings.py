"""Plain frozen settings for the broker link and the forwarder (the config builds them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.sync.servers import server_name

SESSION_EXPIRY_S = 3600

Protocol = Literal["5", "3.1.1"]
MAX_PACKET_BYTES = 8 * 1024 * 1024
RECEIVE_MAXIMUM = 32


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS to the broker; the CA and hostname are verified unless `insecure_skip_verify`."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class Will:
    """The Last Will the broker publishes when the link dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Everything one connection needs; the password is never shown in repr or logs."""

    host: str
    port: int
    client_id: str
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None
    will: Will | None = None
    connect_timeout_s: float = 10.0
    session_expiry_s: int = SESSION_EXPIRY_S
    max_packet_bytes: int = MAX_PACKET_BYTES
    # MQTT 5: incoming QoS 1 messages the broker may send before we acknowledge them.
    receive_maximum: int = RECEIVE_MAXIMUM
    # 3.1.1 has no properties: no session expiry (clean session off unless it is 0), no reason
    # codes on PUBACK, no Receive Maximum, no response topic.
    protocol: Protocol = "5"

    @property
    def server(self) -> str:
        """`host:port` of the broker, for logs and health."""
        return server_name((self.host, self.port))


@dataclass(frozen=True, slots=True)
class ForwarderSettings:
    """How the forwarder publishes and reconnects (it sets the Last Will on `link` itself)."""

    link: LinkSettings
    # The nodes of a cluster, tried in turn (each gets `link` with its host and port); empty:
    # `link.host` and `link.port` only.
    servers: tuple[tuple[str, int], ...] = ()
    delivery: Literal["broker", "wms"] = "broker"
    max_inflight: int = 100
    ack_timeout_s: float = 30.0
    stall_timeout_s: float = 10.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    status_interval_s: float = 30.0
