"""Scan-to-publish and read-to-publish latency through the real daemon, vs raw paho (same run)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config import parse_config  # noqa: E402
from gateway.daemon import Daemon  # noqa: E402 - after the path fix for tests.support
from gateway.domain.gs1_rules import gs1_check_digit  # noqa: E402
from gateway.logs import configure_logging  # noqa: E402
from gateway.readers.llrp.scenario import returns_door_scenario  # noqa: E402
from gateway.readers.llrp.simulator import LlrpSimulator  # noqa: E402
from tests.support.broker import Mosquitto, free_port  # noqa: E402

TOPIC = "returns/milan-returns/dock-3/movements"
NOTES = {
    "scan-to-publish": "scans at 50/s to a tcp-scanner at a receiving station; latency = arrival"
    " at a paho subscriber - send time, matched by serial",
    "read-to-publish beyond the visit window": "LLRP simulator portal, zones outside [1,2] inside"
    " [3,4], absent_s 1.0; latency = arrival - (evidence.last_seen + absent_s). A visit closes"
    " at the first pipeline tick (every 25 ms) after absent_s on the wall clock, so up to 25 ms"
    " of waiting is built in",
}
ABSENT_S = 1.0


class Subscriber:
    """A paho subscriber that stamps every message's arrival (wall clock)."""

    def __init__(self, port: int, topic: str) -> None:
        self.arrivals: list[tuple[float, bytes]] = []
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(topic, qos=1)
        self._client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.arrivals.append((time.time(), bytes(msg.payload)))

    def close(self) -> None:
        """Disconnect and join paho's thread."""
        self._client.disconnect()
        self._client.loop_stop()


class LoopThread:
    """A coroutine on its own event loop in a thread (the daemon, the simulator)."""

    def __init__(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self.loop = asyncio.new_event_loop()
        self._make = make
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._make())

    def call(self, fn: Callable[[], object]) -> None:
        """Run fn on the loop."""
        self.loop.call_soon_threadsafe(fn)

    def join(self, timeout_s: float) -> None:
        """Wait for the coroutine to end."""
        self._thread.join(timeout_s)


def percentiles(values_ms: list[float]) -> dict[str, float]:
    """p50/p90/p99/max of a list of milliseconds."""
    s = sorted(values_ms)
    if not s:
        return {"n": 0}

    def p(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))], 2)

    return {"n": len(s), "p50": p(0.5), "p90": p(0.9), "p99": p(0.99), "max": round(s[-1], 2)}


def _config(broker_port: int, state: Path, readers: list[dict[str, Any]]) -> Any:
    return parse_config(
        {
            "gateway": {"id": "dock-3", "site": "milan-returns", "state_dir": str(state)},
            "health": {"enabled": False},
            "mqtt": {"host": "127.0.0.1", "port": broker_port, "topic_prefix": "returns"},
            "stations": [{"id": "door-3", "kind": "receiving", "absent_s": ABSENT_S}],
            "readers": readers,
        }
    )


def _gtin(n: int) -> str:
    body = f"0614141{n % 1000000:06d}"
    return body + str(gs1_check_digit(body))


def scan_latency(port: int, workdir: Path, rate_per_s: float, duration_s: float) -> dict[str, Any]:
    """Send GS1 scans over TCP at a fixed rate; latency = movement arrival - send time."""
    listen_port = free_port()
    config = _config(
        port,
        workdir / "scan-state",
        [
            {
                "kind": "tcp-scanner",
                "id": "door-3-handheld",
                "station": "door-3",
                "listen": f"127.0.0.1:{listen_port}",
            }
        ],
    )
    daemon = Daemon(config, install_signals=False)
    runner = LoopThread(daemon.run)
    sub = Subscriber(port, TOPIC)
    sock = _connect(listen_port, 10.0)
    sent: dict[str, float] = {}
    count = int(rate_per_s * duration_s)
    try:
        start = time.perf_counter()
        for i in range(count):
            due = start + i / rate_per_s
            time.sleep(max(0.0, due - time.perf_counter()))
            serial = f"B{i:06d}"
            sent[serial] = time.time()
            sock.sendall(f"]C101{_gtin(i)}21{serial}\r".encode())
        deadline = time.time() + 10
        while time.time() < deadline and len(sub.arrivals) < count:
            time.sleep(0.05)
    finally:
        sock.close()
        runner.call(daemon.stop)
        runner.join(15)
        sub.close()
    lat: list[float] = []
    for at_s, payload in sub.arrivals:
        serial = json.loads(payload)["item"].get("serial")
        if serial in sent:
            lat.append((at_s - sent[serial]) * 1000)
    size = len(sub.arrivals[0][1]) if sub.arrivals else 800
    return {"sent": count, **percentiles(lat), "payload_bytes": size}


def read_latency(port: int, workdir: Path, items: int, duration_s: float) -> dict[str, Any]:
    """LLRP simulator portal; latency = movement arrival - (evidence.last_seen + absent_s)."""
    # Pallets of 10 about a second apart: enough movements that p99 is not the maximum.
    scenario = returns_door_scenario(
        items=items, pallets=max(1, items // 10), strays=0, in_and_out=0, duration_s=duration_s
    )
    sim = LlrpSimulator(scenario, port=0)
    ready = threading.Event()
    done = asyncio.Event()

    async def serve() -> None:
        async with sim:
            ready.set()
            await done.wait()

    sim_thread = LoopThread(serve)
    ready.wait(10)
    config = _config(
        port,
        workdir / "llrp-state",
        [
            {
                "kind": "llrp",
                "id": "door-3-portal",
                "station": "door-3",
                "host": "127.0.0.1",
                "port": sim.port,
                "profile": "generic-llrp-portal",
                "zones": {"outside": [1, 2], "inside": [3, 4]},
            }
        ],
    )
    daemon = Daemon(config, install_signals=False)
    sub = Subscriber(port, TOPIC)
    runner = LoopThread(daemon.run)
    try:
        deadline = time.time() + scenario.duration_s + 10
        while time.time() < deadline:
            time.sleep(0.2)
    finally:
        runner.call(daemon.stop)
        runner.join(15)
        sim_thread.call(done.set)
        sim_thread.join(10)
        sub.close()
    lat: list[float] = []
    for at_s, payload in sub.arrivals:
        last = json.loads(payload)["evidence"]["last_seen"]
        last_s = dt.datetime.fromisoformat(last).timestamp()
        lat.append((at_s - (last_s + ABSENT_S)) * 1000)
    size = len(sub.arrivals[0][1]) if sub.arrivals else 800
    return {"movements": len(lat), **percentiles(lat), "payload_bytes": size}


def raw_paho(port: int, size: int, rate_per_s: float, count: int) -> dict[str, Any]:
    """Raw paho QoS 1 publish -> receive through the same broker, same size and rate."""
    sub = Subscriber(port, "bench/raw")
    pub = mqtt.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(0.3)
    try:
        start = time.perf_counter()
        for i in range(count):
            time.sleep(max(0.0, start + i / rate_per_s - time.perf_counter()))
            head = json.dumps({"t": time.time()}).encode()
            pub.publish("bench/raw", head + b" " * max(0, size - len(head)), qos=1)
        deadline = time.time() + 5
        while time.time() < deadline and len(sub.arrivals) < count:
            time.sleep(0.05)
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.close()
    dec = json.JSONDecoder()
    lat = [(at - dec.raw_decode(p.decode())[0]["t"]) * 1000 for at, p in sub.arrivals]
    return percentiles(lat)


def _connect(port: int, timeout_s: float) -> socket.socket:
    deadline = time.time() + timeout_s
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def main() -> int:
    """Run both latency measures and print one JSON line in the common shape."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    rate, duration = (50.0, 5.0) if args.quick else (50.0, 20.0)
    with (
        tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp,
        Mosquitto(Path(tmp) / "mosquitto") as broker,
    ):
        scan = scan_latency(broker.port, Path(tmp), rate, duration)
        scan_base = raw_paho(broker.port, scan["payload_bytes"], rate, int(rate * duration))
        read = read_latency(broker.port, Path(tmp), *((100, 20.0) if args.quick else (500, 60.0)))
        read_base = raw_paho(broker.port, read["payload_bytes"], 20.0, max(read["movements"], 20))
    print("scan", scan, "raw", scan_base)
    print("read", read, "raw", read_base)
    results = []
    for name, got, base, goal_ms in (
        ("scan-to-publish", scan, scan_base, 20.0),
        ("read-to-publish beyond the visit window", read, read_base, 50.0),
    ):
        for q in ("p50", "p90", "p99", "max"):
            value, bval = got.get(q), base.get(q)
            results.append(
                {
                    "name": f"{name} {q} (n={got.get('n', 0)})",
                    "value": value,
                    "unit": "ms",
                    "baseline": bval,
                    "baseline_unit": "ms raw paho QoS 1",
                    "ratio": round(value / bval, 2) if value and bval else None,
                    "goal": f"p99 < {goal_ms:g} ms" if q == "p99" else "",
                    "pass": (value is not None and value < goal_ms) if q == "p99" else None,
                    "note": NOTES[name] if q == "p99" else "",
                }
            )
    print(json.dumps({"bench": "latency", "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
