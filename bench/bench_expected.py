"""Expected returns at a million open RMAs, through the real daemon (`gateway run --config`).

1. Two buffer files are built before any daemon starts, written directly through the real buffer
   API (`ExpectedStore.apply_chunk`, the code an announcement runs): one with 1,000,000 open
   RMAs, one with 600 (two serialised items each). The first 600 RMAs are the same in both.
2. Rounds, alternated (1M, 600, 1M, 600, ...): `gateway run` starts on one file with a
   tcp-scanner and takes the round's scans at once (the same scans for both files: a share of
   them items of the shared RMAs, the rest unannounced). Measured per round: start-up (process
   start to the first movement at a paho subscriber), receipts/s (movements between the first
   and the last arrival), and the daemon's peak RSS (VmHWM from /proc/PID/status) at the end.
   Medians.
3. Announcing: a daemon with a tcp-scanner takes BATCHES x 2,000 RMAs published at QoS 1 on
   `cmd/expected-returns` (all at once; it answers each on `cmd-result`); rate = RMAs / (last
   reply - first publish). Meanwhile a handheld scans at 50/s: scan-to-publish latency during the
   announcement, beside the same latency measured just before it (same run).

Run alone: `.venv/bin/python bench/bench_expected.py` (about 4 minutes; `--rmas 100000` for a
quicker look). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.buffer.expected import ExpectedStore  # noqa: E402 - after the path fix
from gateway.buffer.store import Buffer  # noqa: E402
from gateway.domain.barcodes import gs1_check_digit  # noqa: E402
from gateway.logs import configure_logging  # noqa: E402
from tests.support.broker import Mosquitto, free_port  # noqa: E402
from tests.support.daemon import write_config  # noqa: E402

SITE, GATEWAY = "milan-returns", "dock-3"
BASE = f"returns/{SITE}/{GATEWAY}"
SMALL = 600
BUILD_CHUNK = 5000
ANNOUNCE_BATCH = 2000
GOALS = {"ratio": 0.8, "rss_mb": 120.0, "startup_s": 2.0, "announce_per_s": 20_000.0}


def gtin(n: int) -> str:
    """A valid GTIN-14 for item reference n."""
    body = f"0614141{n % 1_000_000:06d}"
    return body + str(gs1_check_digit(body))


def rma_entry(i: int) -> dict[str, Any]:
    """RMA i: two serialised items."""
    return {
        "rma": f"RMA-{i:07d}",
        "customer": f"C-{i % 9973}",
        "items": [
            {"gtin": gtin(i), "serial": f"E{i:07d}a"},
            {"gtin": gtin(i), "serial": f"E{i:07d}b"},
        ],
    }


async def build(path: Path, count: int) -> float:
    """Write `count` RMAs into a new buffer file through the buffer API; seconds taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    buffer = await Buffer.open(path, max_bytes=4 * 1024**3)
    store = ExpectedStore(buffer)
    try:
        for start in range(0, count, BUILD_CHUNK):
            body = {
                "action": "add",
                "rmas": [rma_entry(i) for i in range(start, min(count, start + BUILD_CHUNK))],
            }
            await store.apply_chunk(body, start)
    finally:
        await buffer.close()
    return time.perf_counter() - started


class Subscriber:
    """Stamps the arrival of every message on its topics (wall clock)."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.arrivals: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self._ready.wait(10)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.arrivals.append((time.time(), msg.topic, bytes(msg.payload)))

    def take(self, suffix: str) -> list[tuple[float, bytes]]:
        """Arrivals on topics ending with `suffix`."""
        with self._lock:
            return [(t, p) for t, topic, p in self.arrivals if topic.endswith(suffix)]

    def clear(self) -> None:
        """Forget what arrived."""
        with self._lock:
            self.arrivals.clear()

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1 on this client's connection."""
        return self._client.publish(topic, payload, qos=1)

    def close(self) -> None:
        """Disconnect and join paho's thread."""
        self._client.disconnect()
        self._client.loop_stop()


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`gateway run --config` as its own process, INFO logs to a file."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "run",
                "--config",
                str(config),
                "--log-format",
                "json",
            ],
            stdout=out,
            stderr=out,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def round_scans(round_index: int, scans: int, announced: int) -> list[dict[str, Any]]:
    """The round's scans: `announced` items of the shared RMAs, then unannounced items."""
    per_round = announced // 2
    first = round_index * per_round
    lines = [
        f"]C101{gtin(i)}21E{i:07d}{suffix}"
        for i in range(first, first + per_round)
        for suffix in ("a", "b")
    ]
    for k in range(scans - len(lines)):
        n = 5_000_000 + round_index * scans + k
        lines.append(f"]C101{gtin(n)}21U{n:08d}")
    return [{"kind": "barcode", "data": data} for data in lines]


def run_round(
    work: Path, broker: int, label: str, round_index: int, scans: list[dict[str, Any]]
) -> dict[str, float]:
    """One daemon run on `label`'s buffer: start-up, receipts/s, peak RSS.

    Start-up: process start to the arrival of the movement of one scan sent as soon as the
    scanner port accepts. Then the daemon is left to finish its start-up work (the background
    integrity check of a large buffer reads the whole file) until its CPU time stops growing,
    and the round's scans are sent at once: receipts/s between the first and last arrival.
    """
    config, listen = _handheld_config(work, label, broker)
    sub = Subscriber(broker, [f"{BASE}/movements"])
    started = time.time()
    proc = start_daemon(config, work / f"{label}.log")
    try:
        sock = _connect(listen)
        sock.sendall(f"]C101{gtin(999_999)}21W{label}{round_index}\r\n".encode())
        while not sub.take("/movements") and time.time() - started < 60:
            time.sleep(0.005)
        first_movement_s = sub.take("/movements")[0][0] - started
        startup_cpu_s = _cpu_ticks(proc.pid) / TICKS_PER_S
        _wait_idle(proc.pid)
        sub.clear()
        cpu_before = _cpu_ticks(proc.pid)
        sock.sendall("".join(s["data"] + "\r\n" for s in scans).encode())
        receipts = 0
        deadline = time.time() + 180
        while time.time() < deadline:
            arrivals = sub.take("/movements")
            receipts = sum(1 for _, p in arrivals if b'"type":"receipt"' in p)
            if receipts >= len(scans):
                break
            time.sleep(0.05)
        cpu_s = (_cpu_ticks(proc.pid) - cpu_before) / TICKS_PER_S
        rss = vm_hwm_mb(proc.pid)
        sock.close()
    finally:
        stop_daemon(proc)
        sub.close()
    times = sorted(t for t, p in arrivals if b'"type":"receipt"' in p)
    expected = sum(1 for _, p in arrivals if b'"expected":true' in p and b'"receipt"' in p)
    return {
        "receipts": receipts,
        "expected_receipts": expected,
        "startup_s": first_movement_s,
        "startup_cpu_s": startup_cpu_s,
        "receipts_per_s": (len(times) - 1) / (times[-1] - times[0]),
        "receipts_per_cpu_s": receipts / cpu_s,
        "peak_rss_mb": rss,
    }


def _wait_idle(pid: int, timeout_s: float = 90.0) -> None:
    """Until the process used under 5 % of a CPU for a whole second."""
    tick = os.sysconf("SC_CLK_TCK")
    deadline = time.time() + timeout_s
    last = _cpu_ticks(pid)
    while time.time() < deadline:
        time.sleep(1.0)
        now = _cpu_ticks(pid)
        if now - last < 0.05 * tick:
            return
        last = now


TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def announce_phase(work: Path, broker: int, batches: int) -> dict[str, Any]:
    """Announce batches of 2,000 RMAs through MQTT while a handheld scans at 50/s."""
    config, listen = _handheld_config(work, "announce", broker)
    sub = Subscriber(broker, [f"{BASE}/movements", f"{BASE}/cmd-result/expected-returns"])
    proc = start_daemon(config, work / "announce.log")
    payloads = [
        json.dumps(
            {
                "action": "add",
                "rmas": [
                    rma_entry(2_000_000 + b * ANNOUNCE_BATCH + i) for i in range(ANNOUNCE_BATCH)
                ],
            }
        ).encode()
        for b in range(batches)
    ]
    try:
        sock = _connect(listen)
        before = _scan_latency(sock, sub, "B", 10.0)
        sub.clear()
        scanning = threading.Event()
        during: dict[str, Any] = {}

        def scan_meanwhile() -> None:
            scanning.set()
            during.update(_scan_latency(sock, sub, "D", None, until=done))

        done = threading.Event()
        scanner = threading.Thread(target=scan_meanwhile)
        scanner.start()
        scanning.wait()
        cpu_before = _cpu_ticks(proc.pid)
        first = time.time()
        for payload in payloads:
            sub.publish(f"{BASE}/cmd/expected-returns", payload)
        deadline = time.time() + 300
        while time.time() < deadline and len(sub.take("/expected-returns")) < batches:
            time.sleep(0.02)
        replies = sub.take("/expected-returns")
        last = max(t for t, _ in replies)
        cpu_s = (_cpu_ticks(proc.pid) - cpu_before) / TICKS_PER_S
        done.set()
        scanner.join()
        sock.close()
        accepted = sum(json.loads(p).get("accepted", 0) for _, p in replies)
    finally:
        stop_daemon(proc)
        sub.close()
    return {
        "rmas": batches * ANNOUNCE_BATCH,
        "accepted": accepted,
        "seconds": last - first,
        "rmas_per_s": accepted / (last - first),
        "rmas_per_daemon_cpu_s": accepted / cpu_s,
        "scan_latency_before_ms": before,
        "scan_latency_during_ms": during,
    }


def _connect(port: int) -> socket.socket:
    deadline = time.time() + 20
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
            continue
        sock.sendall(b"device:hh-1\r\n")
        return sock


def _scan_latency(
    sock: socket.socket,
    sub: Subscriber,
    tag: str,
    duration_s: float | None,
    until: threading.Event | None = None,
) -> dict[str, float]:
    """Scans at 50/s; latency = movement arrival - send time, matched by serial."""
    sent: dict[str, float] = {}
    start = time.perf_counter()
    i = 0
    while (duration_s is not None and time.perf_counter() - start < duration_s) or (
        until is not None and not until.is_set()
    ):
        time.sleep(max(0.0, start + i / 50 - time.perf_counter()))
        serial = f"{tag}{i:07d}"
        sent[serial] = time.time()
        sock.sendall(f"]C101{gtin(900_000 + i)}21{serial}\r\n".encode())
        i += 1
    deadline = time.time() + 15
    while time.time() < deadline:
        got = {json.loads(p)["item"].get("serial") for _, p in sub.take("/movements")}
        if set(sent) <= got:
            break
        time.sleep(0.05)
    lat = sorted(
        (t - sent[s]) * 1000
        for t, p in sub.take("/movements")
        if (s := json.loads(p)["item"].get("serial")) in sent
    )
    if not lat:
        return {"scans": len(sent), "received": 0}
    return {
        "scans": len(sent),
        "received": len(lat),
        "p50": round(lat[len(lat) // 2], 1),
        "p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1),
        "max": round(lat[-1], 1),
    }


def main() -> int:
    """Build, run the rounds and the announcement, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rmas", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scans", type=int, default=10_000, help="scans per round")
    parser.add_argument("--batches", type=int, default=50, help="announcement batches of 2,000")
    args = parser.parse_args()
    configure_logging("auto", "WARNING")  # stdout is the JSON report only
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-expected-") as tmp:
        work = Path(tmp)
        build_s = asyncio.run(build(work / "big" / "buffer.sqlite3", args.rmas))
        asyncio.run(build(work / "small" / "buffer.sqlite3", SMALL))
        file_mb = (work / "big" / "buffer.sqlite3").stat().st_size / 1e6
        broker = Mosquitto(work / "mosquitto", port=free_port())
        broker.start()
        try:
            results: dict[str, list[dict[str, float]]] = {"big": [], "small": []}
            announced = 2 * (SMALL // args.rounds)
            for r in range(args.rounds):
                scans = round_scans(r, args.scans, announced)
                for label in ("big", "small"):
                    results[label].append(run_round(work, broker.port, label, r, scans))
            announcing = announce_phase(work, broker.port, args.batches)
        finally:
            broker.stop()
    med = {
        label: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for label, runs in results.items()
    }
    report = {
        "load_average_1_5_15_at_start": load_at_start,
        "load_average_1_5_15_at_end": os.getloadavg(),
        "cpus": os.cpu_count(),
        "open_rmas": args.rmas,
        "build_s": round(build_s, 1),
        "buffer_file_mb": round(file_mb, 1),
        "rounds": results,
        "median": med,
        "ratio_receipts_per_s": med["big"]["receipts_per_s"] / med["small"]["receipts_per_s"],
        "ratio_receipts_per_cpu_s": (
            med["big"]["receipts_per_cpu_s"] / med["small"]["receipts_per_cpu_s"]
        ),
        "announcing": announcing,
        "goals": GOALS,
    }
    print(json.dumps(report, indent=2))
    return 0


def _handheld_config(work: Path, label: str, broker: int) -> tuple[Path, int]:
    """A receiving door with one TCP handheld on a free port: the config file and that port."""
    listen = free_port()
    config = write_config(
        work / f"{label}.toml",
        broker_port=broker,
        state_dir=work / label,
        stations=[{"id": "door-3", "kind": "receiving"}],
        readers=[
            {
                "kind": "tcp-scanner",
                "id": "hh",
                "station": "door-3",
                "listen": f"127.0.0.1:{listen}",
            }
        ],
        gateway_id=GATEWAY,
        site=SITE,
    )
    return config, listen


if __name__ == "__main__":
    raise SystemExit(main())
