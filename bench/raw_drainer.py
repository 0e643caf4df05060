"""The memory and start-up baseline: drain a buffer file with bare sqlite3 and paho, nothing else.

`python bench/raw_drainer.py --db FILE --port P --topic T [--window N] [--cache-kib K]`
opens the daemon's own SQLite file with the buffer's pragmas (WAL, synchronous=FULL, the same
page cache), reads the undelivered movements in pages of 500 in `seq` order, publishes each
payload at QoS 1 keeping `--window` un-PUBACKed (refilled from `on_publish`, paho's own window
off, as the daemon runs it), and marks every 500 PUBACKed rows delivered in one transaction.
It is the least a process can be that does the daemon's drain: what the daemon's RSS and
start-up are compared with. Like the daemon, it stays connected when the backlog is empty,
until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
from collections import deque

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

PAGE = 500


def main() -> int:
    """Drain, then idle, until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--cache-kib", type=int, default=2000)
    args = parser.parse_args()
    conn = sqlite3.connect(args.db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"PRAGMA cache_size = -{args.cache_kib}")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw-drainer", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    page: deque[tuple[int, bytes]] = deque()
    seq_of_mid: dict[int, int] = {}
    acked: list[tuple[int]] = []
    state = {"last": 0, "in_flight": 0, "exhausted": False}

    def mark() -> None:
        conn.execute("BEGIN")
        conn.executemany("UPDATE outbox SET delivered = 1 WHERE seq = ?", acked)
        conn.execute("COMMIT")
        acked.clear()

    def fill() -> None:
        while state["in_flight"] < args.window:
            if not page:
                if state["exhausted"]:
                    return
                rows = conn.execute(
                    "SELECT seq, payload FROM outbox WHERE delivered = 0 AND seq > ?"
                    " ORDER BY seq LIMIT ?",
                    (state["last"], PAGE),
                ).fetchall()
                if not rows:
                    state["exhausted"] = True
                    return
                page.extend(rows)
                state["last"] = rows[-1][0]
            seq, payload = page.popleft()
            state["in_flight"] += 1
            seq_of_mid[client.publish(args.topic, payload, qos=1).mid] = seq

    def on_publish(_c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        state["in_flight"] -= 1
        acked.append((seq_of_mid.pop(mid),))
        fill()
        if len(acked) >= PAGE or (state["exhausted"] and not state["in_flight"]):
            mark()

    client.on_connect = lambda *_a: fill()
    client.on_publish = on_publish
    signal.signal(signal.SIGTERM, lambda *_a: client.disconnect())
    client.connect("127.0.0.1", args.port, keepalive=30)
    client.loop_forever()
    if acked:
        mark()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
