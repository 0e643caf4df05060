"""Health and metrics over HTTP on 127.0.0.1: `/healthz` (200 or 503 with reasons), `/metrics`.

`POST /actions/NAME` with a JSON body runs a local action (e.g. `profile-apply` for a technician
on site when the broker is down); it listens on loopback only, by default. The server is aiohttp;
the technicians' console plugs into it as an `HttpExtension` (routes plus its login guard). Every
route answers only requests whose `Host` it knows (421 otherwise: see `runtime/hosts.py`), and the
server speaks HTTPS when given an SSL context.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.errors import GatewayError
from gateway.logs import get_logger
from gateway.runtime.hosts import HostAllowList

_log = get_logger("health")
_MAX_BODY_BYTES = 1024 * 1024
_HOST_REFUSALS_LOGGED = 20
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
    stall = health.get("buffer_stall") or {}
    if stall.get("state") == "buffer-stalled":
        reasons.append(f"buffer-stalled since {stall.get('since')}: {stall.get('reason')}")
    if health.get("loop_stalled"):
        reasons.append("event loop stalled")
    return sorted(set(reasons))


class HttpExtension(Protocol):
    """Something more the HTTP server serves (the technicians' console): routes and a guard."""

    def install(self, app: web.Application, registry: CollectorRegistry) -> None:
        """Add routes, middlewares and metrics collectors to the server before it starts."""
        ...


class HealthServer:
    """Serves `/healthz`, `/metrics` and `POST /actions/NAME` on aiohttp; `async with` binds."""

    def __init__(
        self,
        listen: str,
        health: Callable[[], Mapping[str, Any]],
        policy: HealthPolicy | None = None,
        actions: Mapping[str, Action] | None = None,
        extension: HttpExtension | None = None,
        *,
        hosts: HostAllowList | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host, self._port = split_listen(listen)
        self._hosts = hosts or HostAllowList(self._host)
        self._hosts_refused = 0
        self._ssl_context = ssl_context
        self._health = health
        self._policy = policy or HealthPolicy()
        self._actions = dict(actions or {})
        self._extension = extension
        self._runner: web.AppRunner | None = None
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_GatewayCollector(health))

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._runner is None or not self._runner.addresses:
            return self._port
        port: int = self._runner.addresses[0][1]
        return port

    async def __aenter__(self) -> Self:
        app = web.Application(client_max_size=_MAX_BODY_BYTES, middlewares=[self._known_host])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/actions/{name}", self._action)
        if self._extension is not None:
            self._extension.install(app, self._registry)
        app.router.add_route("*", "/{tail:.*}", _not_found)
        # No access log: a scrape every few seconds would bury the gateway's own events.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(
            runner, self._host, self._port, reuse_address=True, ssl_context=self._ssl_context
        )
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise GatewayError(
                f"health endpoint cannot listen on {self._host}:{self._port}: {exc}"
            ) from exc
        self._runner = runner
        _log.info(
            "health_listening", host=self._host, port=self.port, tls=self._ssl_context is not None
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._runner.cleanup(), timeout=5.0)
            self._runner = None

    @web.middleware
    async def _known_host(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # First of all middlewares: a rebound name reaches no route, no session, no body read.
        if not self._hosts.allows(request.headers.get("Host")):
            self._hosts_refused += 1
            if self._hosts_refused <= _HOST_REFUSALS_LOGGED:  # a rebinding page may loop
                _log.warning("http_host_refused", host=request.headers.get("Host", "")[:80])
            return _json({"ok": False, "error": "unknown Host: add it to [console] hosts"}, 421)
        return await handler(request)

    async def _healthz(self, _request: web.Request) -> web.Response:
        health = self._health()
        reasons = assess(health, self._policy)
        body = json.dumps({"healthy": not reasons, "reasons": reasons, **health}, default=str)
        response = web.Response(
            status=503 if reasons else 200, text=body, content_type="application/json"
        )
        response.force_close()  # as before aiohttp: one request per connection, then close
        return response

    async def _metrics(self, _request: web.Request) -> web.Response:
        response = web.Response(
            body=generate_latest(self._registry),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
        response.force_close()
        return response

    async def _action(self, request: web.Request) -> web.Response:
        action = self._actions.get(request.match_info["name"])
        if action is None:
            return _json({"ok": False, "error": "no such action"}, 404)
        if request.content_length is None or request.content_length > _MAX_BODY_BYTES:
            return _json({"ok": False, "error": "body length"}, 400)
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError, web.HTTPRequestEntityTooLarge):
            return _json({"ok": False, "error": "not JSON"}, 400)
        if not isinstance(body, dict):
            return _json({"ok": False, "error": "not an object"}, 400)
        # Who asked, for the audit: the address always; the signed-in user when a login is
        # required (then the body's own `requested_by` is not trusted).
        body = {**body, "client": request.remote}
        user = request.get(USER_KEY)
        if user is not None:
            body["requested_by"] = user
        result = await action(body)
        return _json(result, 200 if result.get("ok") else 409)


USER_KEY = web.RequestKey("gateway.user", str)
"""Request key under which a login guard puts the signed-in user's name."""


def split_listen(listen: str) -> tuple[str, int]:
    """(host, port) of a `host:port` listen string; an empty host means 127.0.0.1."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _not_found(_request: web.Request) -> web.Response:
    response = web.Response(status=404, text="try /healthz or /metrics\n")
    response.force_close()
    return response


def _json(body: Mapping[str, Any], status: int) -> web.Response:
    response = web.Response(
        status=status, text=json.dumps(body, default=str), content_type="application/json"
    )
    response.force_close()
    return response


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
        yield from _stall_metrics(health.get("buffer_stall") or {})
        pipeline = health.get("pipeline") or {}
        for key, help_text in (
            ("queued_events", "Events read but not journaled yet"),
            ("rows_behind", "Journaled events the pipeline has not taken yet"),
        ):
            gauge = GaugeMetricFamily(f"gateway_pipeline_{key}", help_text)
            gauge.add_metric([], float(pipeline.get(key) or 0))
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
        yield from _reader_metrics(health.get("readers") or {})


def _reader_metrics(readers: Mapping[str, Any]) -> Iterator[Metric]:
    """Each reader's state, events, bad input, GPI levels and seconds inventorying."""
    state = GaugeMetricFamily(
        "gateway_reader_state", "1 for the reader's current state", labels=["reader", "state"]
    )
    reads = CounterMetricFamily("gateway_reader_events", "Events from a reader", labels=["reader"])
    bad = CounterMetricFamily(
        "gateway_reader_bad_input", "Bad input from a reader", labels=["reader"]
    )
    gpi = GaugeMetricFamily(
        "gateway_reader_gpi", "1 while a reader's GPI is high", labels=["reader", "port"]
    )
    rf = CounterMetricFamily(
        "gateway_reader_inventory_seconds",
        "Seconds the reader has inventoried (this session; triggered inventory)",
        labels=["reader"],
    )
    for reader_id, reader in sorted(readers.items()):
        for name in _READER_STATES:
            state.add_metric([reader_id, name], 1.0 if reader.get("state") == name else 0.0)
        reads.add_metric([reader_id], float(reader.get("events") or 0))
        bad.add_metric([reader_id], float(reader.get("bad_input") or 0))
        for port, level in sorted((reader.get("gpi") or {}).items()):
            gpi.add_metric([reader_id, str(port)], 1.0 if level == "high" else 0.0)
        if reader.get("inventory_s") is not None:
            rf.add_metric([reader_id], float(reader["inventory_s"]))
    yield state
    yield reads
    yield bad
    yield gpi
    yield rf


def _stall_metrics(stall: Mapping[str, Any]) -> Iterator[Metric]:
    """Whether the buffer file is stalled now, and for how long and how often it was."""
    stalled = GaugeMetricFamily(
        "gateway_buffer_stalled", "1 while the buffer file is stalled (held elsewhere, disk errors)"
    )
    stalled.add_metric([], 1.0 if stall.get("state") == "buffer-stalled" else 0.0)
    yield stalled
    seconds = CounterMetricFamily(
        "gateway_buffer_stall_seconds", "Seconds the buffer file was stalled, the current stall too"
    )
    seconds.add_metric([], float(stall.get("stall_seconds_total") or 0.0))
    yield seconds
    stalls = CounterMetricFamily("gateway_buffer_stalls", "Stalls of the buffer file")
    stalls.add_metric([], float(stall.get("stalls_total") or 0))
    yield stalls
