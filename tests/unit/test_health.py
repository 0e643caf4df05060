"""Health: the pure assessment, and the real HTTP endpoint with Prometheus text."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.runtime.health import HealthPolicy, HealthServer, assess

HEALTHY: dict[str, Any] = {
    "broker": {"connected": True, "down_for_s": None, "published": 5},
    "readers": {
        "portal": {
            "reader": "portal",
            "state": "inventorying",
            "events": 10,
            "bad_input": 1,
            "gpi": {"1": "high", "2": "low"},
            "inventory_s": 12.5,
        }
    },
    "buffer": {"pending": 3, "used_bytes": 100, "budget_bytes": 1000},
    "pipeline": {"queued_events": 2, "journaled_id": 90, "cursor": 83, "rows_behind": 7},
    "counters": {"scans": 4},
    "movements_by_type": {"receipt": 2},
    "buffer_stall": {"state": "ok", "stall_seconds_total": 2.5, "stalls_total": 1},
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"broker": {"down_for_s": 500.0}}, "broker unreachable for 500s"),
        (
            {"readers": {"p": {"reader": "p", "state": "silent", "down_for_s": 300.0}}},
            "reader p silent",
        ),
        (
            {"readers": {"p": {"reader": "p", "state": "rejected-config"}}},
            "rejected its configuration",
        ),
        ({"buffer": {"used_bytes": 950, "budget_bytes": 1000}}, "buffer above 90%"),
        ({"loop_stalled": True}, "event loop stalled"),
        (
            {
                "buffer_stall": {
                    "state": "buffer-stalled",
                    "since": "2026-12-08T01:00:00.000Z",
                    "reason": "database is locked",
                }
            },
            "buffer-stalled since 2026-12-08T01:00:00.000Z: database is locked",
        ),
    ],
)
def test_assess_names_each_reason(change: dict[str, Any], reason: str) -> None:
    assert assess(HEALTHY, HealthPolicy()) == []
    reasons = assess({**HEALTHY, **change}, HealthPolicy())
    assert any(reason in r for r in reasons), reasons


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def test_http_endpoint_serves_health_and_metrics() -> None:
    state: dict[str, Any] = dict(HEALTHY)

    async with HealthServer("127.0.0.1:0", lambda: state) as server:
        status, body = await _get(server.port, "/healthz")
        assert status == 200
        assert '"healthy": true' in body
        status, metrics = await _get(server.port, "/metrics")
        assert status == 200
        assert 'gateway_reader_state{reader="portal",state="inventorying"} 1.0' in metrics
        assert 'gateway_events_total{event="scans"} 4.0' in metrics
        assert 'gateway_reader_gpi{port="1",reader="portal"} 1.0' in metrics
        assert 'gateway_reader_gpi{port="2",reader="portal"} 0.0' in metrics
        assert 'gateway_reader_inventory_seconds_total{reader="portal"} 12.5' in metrics
        assert 'gateway_movements_total{type="receipt"} 2.0' in metrics
        assert "gateway_buffer_pending 3.0" in metrics
        assert "gateway_pipeline_rows_behind 7.0" in metrics
        assert "gateway_pipeline_queued_events 2.0" in metrics
        assert "gateway_buffer_stalled 0.0" in metrics
        assert "gateway_buffer_stall_seconds_total 2.5" in metrics
        assert "gateway_buffer_stalls_total 1.0" in metrics
        state["buffer_stall"] = {
            "state": "buffer-stalled",
            "since": "2026-12-08T01:00:00.000Z",
            "reason": "database is locked",
            "stall_seconds_total": 4.0,
        }
        status, body = await _get(server.port, "/healthz")
        assert status == 503
        assert "buffer-stalled since 2026-12-08T01:00:00.000Z: database is locked" in body
        _, metrics = await _get(server.port, "/metrics")
        assert "gateway_buffer_stalled 1.0" in metrics
        assert "gateway_buffer_stall_seconds_total 4.0" in metrics
        state["buffer_stall"] = HEALTHY["buffer_stall"]
        state["broker"] = {"connected": False, "down_for_s": 1000.0}
        status, body = await _get(server.port, "/healthz")
        assert status == 503
        assert "broker unreachable" in body
        status, _ = await _get(server.port, "/nope")
        assert status == 404
