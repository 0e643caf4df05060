"""Drain benchmark: the Forwarder emptying a 100,000-row SQLite outbox against raw paho QoS 1.

Both publish the same ~450-byte movement payloads to one private mosquitto with the same in-flight
window, in the same run. Raw paho: loop_start, max_inflight_messages_set(window), every publish
queued at once, timed until the last PUBACK. Forwarder: timed from run() until the outbox holds no
undelivered row (PUBACKs received and marks committed). Prints JSON; goal ratio >= 0.8.

    .venv/bin/python bench/bench_drain.py [--quick] [--window N] [--rows N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from gateway.config import MqttSection  # noqa: E402
from gateway.domain.movements import Evidence, Item, Movement  # noqa: E402
from gateway.domain.wire import render_movement_json  # noqa: E402
from gateway.logs import configure_logging  # noqa: E402
from gateway.sync.forwarder import Forwarder  # noqa: E402
from gateway.sync.topics import Topics  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402

RAW_QUEUE_MAX = 20_000
TOPICS = Topics(prefix="returns", site="milan-returns", gateway="dock-3")


@dataclass(frozen=True, slots=True)
class Row:
    """An outbox row."""

    seq: int
    id: str
    payload: bytes


def movement_payload(seq: int) -> tuple[str, bytes]:
    """A realistic movement message (~450 bytes), rendered as the daemon renders it, and its id."""
    at_s = 1_795_000_000.0 + seq
    movement = Movement(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-{seq}")),
        type="receipt",
        occurred_at_s=at_s,
        station="door-3",
        direction="in",
        item=Item(
            epc=f"urn:epc:id:sgtin:0614141.812345.{seq}", gtin="80614141123458", serial=str(seq)
        ),
        evidence=Evidence(
            source="rfid",
            reader="door-3-portal",
            first_seen_s=at_s - 2.1,
            last_seen_s=at_s,
            reads=17,
            antennas=(1, 3),
            peak_rssi_dbm=-48.5,
        ),
        rma="RMA-000123",
        expected=True,
    )
    return movement.id, render_movement_json(movement, seq, "milan-returns", "dock-3")


class SqliteOutbox:
    """A SQLite outbox like the buffer's, its queries off the loop in a thread (as aiosqlite)."""

    def __init__(self, path: Path, rows: list[Row]) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
            " payload BLOB NOT NULL, delivered INTEGER NOT NULL DEFAULT 0)"
        )
        self.db.execute("CREATE INDEX outbox_pending ON outbox (seq) WHERE delivered = 0")
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO outbox (seq, id, payload) VALUES (?, ?, ?)",
            [(r.seq, r.id, r.payload) for r in rows],
        )
        self.db.execute("COMMIT")
        self.total = len(rows)
        self.delivered = 0
        self.all_delivered = asyncio.Event()
        self.mark_calls = 0
        self._lock = threading.Lock()

    def undelivered(self) -> int:
        """How many rows are not delivered yet."""
        with self._lock:
            row = self.db.execute("SELECT count(*) FROM outbox WHERE delivered = 0").fetchone()
        count: int = row[0]
        return count

    def _pending(self, after_seq: int, limit: int) -> list[Row]:
        with self._lock:
            return [
                Row(*r)
                for r in self.db.execute(
                    "SELECT seq, id, payload FROM outbox WHERE seq > ? AND delivered = 0"
                    " ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                )
            ]

    def _mark(self, seqs: Sequence[int]) -> int:
        with self._lock:
            self.db.execute("BEGIN")
            cursor = self.db.executemany(
                "UPDATE outbox SET delivered = 1 WHERE seq = ? AND delivered = 0",
                [(s,) for s in seqs],
            )
            self.db.execute("COMMIT")
            return cursor.rowcount

    async def pending(self, after_seq: int, limit: int) -> Sequence[Row]:
        return await asyncio.to_thread(self._pending, after_seq, limit)

    async def mark_delivered(self, seqs: Sequence[int]) -> int:
        changed = await asyncio.to_thread(self._mark, seqs)
        self.mark_calls += 1
        self.delivered += changed
        if self.delivered >= self.total:
            self.all_delivered.set()
        return changed

    async def mark_delivered_ids(self, ids: Sequence[str]) -> int:
        raise NotImplementedError

    async def mark_delivered_upto(self, seq: int) -> int:
        raise NotImplementedError


def raw_paho(port: int, payloads: list[bytes], window: int) -> float:
    """Seconds raw paho takes to get every PUBACK back."""
    done = threading.Event()
    # paho's mids wrap at 65,535: keep at most this many queued, or they collide and get dropped.
    queued = threading.BoundedSemaphore(RAW_QUEUE_MAX)
    acked = 0
    total = len(payloads)

    def on_publish(*_args: object) -> None:
        nonlocal acked
        acked += 1
        queued.release()
        if acked == total:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        time.sleep(0.2)  # CONNACK
        started = time.perf_counter()
        for payload in payloads:
            queued.acquire()
            client.publish(TOPICS.movements, payload, qos=1)
        if not done.wait(600):
            raise RuntimeError(f"raw paho: only {acked} of {total} PUBACKs")
        return time.perf_counter() - started
    finally:
        client.disconnect()
        client.loop_stop()


async def forwarder_drain(
    port: int, outbox: SqliteOutbox, window: int
) -> tuple[float, dict[str, object]]:
    """Seconds the Forwarder takes to empty the outbox."""
    section = MqttSection(host="127.0.0.1", port=port, max_inflight=window, keepalive_s=30)
    settings = section.forwarder_settings("bench-forwarder")
    forwarder = Forwarder(outbox, settings, TOPICS, health=dict)
    started = time.perf_counter()
    task = asyncio.create_task(forwarder.run())
    try:
        await asyncio.wait_for(outbox.all_delivered.wait(), timeout=600)
        elapsed = time.perf_counter() - started
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await forwarder.stop()
    stats = forwarder.stats
    return elapsed, {
        "window": stats.window,
        "inflight_peak": stats.inflight_peak,
        "published": stats.published,
        "delivered": stats.delivered,
        "mark_transactions": outbox.mark_calls,
        "undelivered_after": outbox.undelivered(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 rows instead of 100,000")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--window", type=int, default=100)
    args = parser.parse_args()
    configure_logging("console", "WARNING")  # stdout carries only the JSON result
    count = args.rows or (10_000 if args.quick else 100_000)
    rows = [Row(seq, *movement_payload(seq)) for seq in range(1, count + 1)]
    payloads = [r.payload for r in rows]
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "mosquitto") as broker:
        outbox = SqliteOutbox(Path(tmp) / "outbox.sqlite3", rows)
        raw_s = raw_paho(broker.port, payloads, args.window)
        fwd_s, fwd_stats = asyncio.run(forwarder_drain(broker.port, outbox, args.window))
        outbox.db.close()
    raw_rate = count / raw_s
    fwd_rate = count / fwd_s
    print(
        json.dumps(
            {
                "rows": count,
                "payload_bytes_avg": round(sum(map(len, payloads)) / count),
                "window": args.window,
                "raw_paho_msgs_per_s": round(raw_rate),
                "forwarder_msgs_per_s": round(fwd_rate),
                "ratio": round(fwd_rate / raw_rate, 3),
                "goal_ratio": 0.8,
                "forwarder": fwd_stats,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
