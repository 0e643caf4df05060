"""Health and metrics over HTTP on 127.0.0.1: `/healthz` (200 or 503 with reasons), `/metrics`.

`POST /actions/NAME` with a JSON body runs a local action (e.g. `profile-apply` for a technician
on site when the broker is down); it listens on loopback only, by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.errors import GatewayError
from gateway.logs import get_logger

_log = get_logger("health")
_MAX_REQUEST_BYTES = 8192
_MAX_BODY_BYTES = 1024 * 1024
Action = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_READER_STATES = (
    "idle",
    "connecting",
    "connected",
    "inventorying",
    "silent",
    "rejected-config",
    "down",
    "done",
)


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When the gateway calls itself unhealthy."""

    broker_down_max_s: float = 120.0
    reader_down_max_s: float = 120.0
    buffer_full_share: float = 0.9


def assess(health: Mapping[str, Any], policy: HealthPolicy) -> list[str]:
    """Reasons the gateway is unhealthy (empty when healthy); pure, for tests and `/healthz`."""
    reasons: list[str] = []
    broker = health.get("broker") or {}
    down_s = broker.get("down_for_s")
    if down_s is not None and down_s > policy.broker_down_max_s:
        reasons.append(f"broker unreachable for {down_s:.0f}s")
    for reader in (health.get("readers") or {}).values():
        state = reader.get("state")
        down_for = reader.get("down_for_s") or 0.0
        if state in ("down", "silent", "rejected-config") and down_for > policy.reader_down_max_s:
            reasons.append(f"reader {reader.get('reader')} {state} for {down_for:.0f}s")
        if state == "rejected-config":
            reasons.append(f"reader {reader.get('reader')} rejected its configuration")
    buffer = health.get("buffer") or {}
    budget = buffer.get("budget_bytes") or 0
    if budget and buffer.get("used_bytes", 0) > policy.buffer_full_share * budget:
        reasons.append(f"buffer above {policy.buffer_full_share:.0%} of its byte budget")
    if health.get("loop_stalled"):
        reasons.append("event loop stalled")
    return sorted(set(reasons))


class HealthServer:
    """Serves `/healthz` and `/metrics` from a health() callable; `async with` binds the port."""

    def __init__(
        self,
        listen: str,
        health: Callable[[], Mapping[str, Any]],
        policy: HealthPolicy | None = None,
        actions: Mapping[str, Action] | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self._host = host.strip("[]") or "127.0.0.1"
        self._port = int(port)
        self._health = health
        self._policy = policy or HealthPolicy()
        self._actions = dict(actions or {})
        self._server: asyncio.Server | None = None
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_GatewayCollector(health))

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._server is None:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> Self:
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._port)
        except OSError as exc:
            raise GatewayError(
                f"health endpoint cannot listen on {self._host}:{self._port}: {exc}"
            ) from exc
        _log.info("health_listening", host=self._host, port=self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
        ):
            writer.close()
            return
        if len(head) > _MAX_REQUEST_BYTES:
            await _respond(writer, 431, "text/plain", b"request header too large\n")
            return
        parts = head.split(b"\r\n", 1)[0].split()
        method = parts[0].decode("latin-1") if parts else ""
        path = parts[1].decode("latin-1") if len(parts) >= 2 else ""
        if method == "POST" and path.startswith("/actions/"):
            await self._action(path.removeprefix("/actions/"), head, reader, writer)
        elif path == "/healthz":
            health = self._health()
            reasons = assess(health, self._policy)
            body = json.dumps({"healthy": not reasons, "reasons": reasons, **health}, default=str)
            await _respond(writer, 503 if reasons else 200, "application/json", body.encode())
        elif path == "/metrics":
            await _respond(
                writer, 200, "text/plain; version=0.0.4", generate_latest(self._registry)
            )
        else:
            await _respond(writer, 404, "text/plain", b"try /healthz or /metrics\n")

    async def _action(
        self, name: str, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        action = self._actions.get(name)
        length = _content_length(head)
        if action is None:
            await _respond(
                writer, 404, "application/json", b'{"ok": false, "error": "no such action"}'
            )
            return
        if length is None or length > _MAX_BODY_BYTES:
            await _respond(
                writer, 400, "application/json", b'{"ok": false, "error": "body length"}'
            )
            return
        try:
            body = await asyncio.wait_for(reader.readexactly(length), timeout=10.0)
            request = json.loads(body)
        except (asyncio.IncompleteReadError, TimeoutError, ValueError, UnicodeDecodeError):
            await _respond(writer, 400, "application/json", b'{"ok": false, "error": "not JSON"}')
            return
        if not isinstance(request, dict):
            await _respond(
                writer, 400, "application/json", b'{"ok": false, "error": "not an object"}'
            )
            return
        result = await action(request)
        status = 200 if result.get("ok") else 409
        await _respond(writer, status, "application/json", json.dumps(result, default=str).encode())


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


async def _respond(writer: asyncio.StreamWriter, status: int, kind: str, body: bytes) -> None:
    reason = {
        200: "OK",
        400: "Bad Request",
        404: "Not Found",
        409: "Conflict",
        431: "Too Large",
        503: "Service Unavailable",
    }[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


class _GatewayCollector(Collector):
    """Turns the health snapshot into Prometheus metrics at scrape time."""

    def __init__(self, health: Callable[[], Mapping[str, Any]]) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        health = self._health()
        counters = health.get("counters") or {}
        events = CounterMetricFamily(
            "gateway_events", "Counted gateway events by name", labels=["event"]
        )
        for name, value in sorted(counters.items()):
            events.add_metric([name], float(value))
        yield events
        movements = CounterMetricFamily(
            "gateway_movements", "Movements made by type", labels=["type"]
        )
        for name, value in sorted((health.get("movements_by_type") or {}).items()):
            movements.add_metric([name], float(value))
        yield movements
        buffer = health.get("buffer") or {}
        for key, help_text in (
            ("pending", "Movements not yet delivered"),
            ("oldest_pending_age_s", "Age of the oldest undelivered movement in seconds"),
            ("used_bytes", "Bytes the buffer uses against its budget"),
            ("budget_bytes", "The buffer's byte budget"),
            ("journal_rows", "Raw events in the journal"),
            ("gaps_total", "Gaps recorded because input was refused"),
        ):
            gauge = GaugeMetricFamily(f"gateway_buffer_{key}", help_text)
            value = buffer.get(key)
            gauge.add_metric([], float(value) if value is not None else 0.0)
            yield gauge
        broker = health.get("broker") or {}
        for key in (
            "published",
            "delivered",
            "refused",
            "resent",
            "acks_received",
            "bad_acks",
            "reconnects",
            "failovers",
        ):
            counter = CounterMetricFamily(f"gateway_mqtt_{key}", f"MQTT forwarder: {key}")
            counter.add_metric([], float(broker.get(key) or 0))
            yield counter
        connected = GaugeMetricFamily("gateway_mqtt_connected", "1 when the broker link is up")
        connected.add_metric([], 1.0 if broker.get("connected") else 0.0)
        yield connected
        server = GaugeMetricFamily(
            "gateway_mqtt_server",
            "1 for the broker (of [mqtt] servers) the link is on",
            labels=["server"],
        )
        if broker.get("server"):
            server.add_metric([str(broker["server"])], 1.0)
        yield server
        state = GaugeMetricFamily(
            "gateway_reader_state", "1 for the reader's current state", labels=["reader", "state"]
        )
        reads = CounterMetricFamily(
            "gateway_reader_events", "Events from a reader", labels=["reader"]
        )
        bad = CounterMetricFamily(
            "gateway_reader_bad_input", "Bad input from a reader", labels=["reader"]
        )
        for reader_id, reader in sorted((health.get("readers") or {}).items()):
            for name in _READER_STATES:
                state.add_metric([reader_id, name], 1.0 if reader.get("state") == name else 0.0)
            reads.add_metric([reader_id], float(reader.get("events") or 0))
            bad.add_metric([reader_id], float(reader.get("bad_input") or 0))
        yield state
        yield reads
        yield bad
