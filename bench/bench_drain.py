"""Drain: the real daemon emptying a real buffer's backlog, against a raw paho publisher.

Same broker (a private mosquitto, started afresh for every run), same payloads (the daemon's own
rendering of the same movements), same window (`max_inflight` in the daemon, in-flight count in
the baseline).
Rounds alternate baseline, daemon, baseline, daemon, ...; the figures are medians.

- baseline: raw paho in its own process, driven the fastest way paho allows: one thread
  (`loop_forever`), paho's own in-flight limit off, the caller keeps `window` messages in flight
  and publishes the next one from `on_publish`. Timed from the first publish to the last PUBACK.
  (A hand-written select loop around `loop_read`/`loop_write` instead of `loop_forever` measured
  the same within noise.)
- daemon: `gateway run` on a copy of a buffer file holding the backlog (written through the real
  `Buffer`, all undelivered). Timed from the first committed delivery mark to the moment the
  buffer holds no undelivered movement, polled through a read-only SQLite connection.
- `delivery = "wms"`: the same with the reference consumer (`gateway wms-sink`) subscribed; the
  daemon's rows count as delivered only when the consumer acknowledges their ids. The baseline,
  subscribed to the same ack topic, keeps the daemon's two limits: `window` un-PUBACKed and at
  most `MAX_UNACKED` (4,000) waiting for the consumer's ack; timed from its first publish to the
  last id acknowledged.

CPU per 1,000 messages (process user + system) is reported beside the rates: on a shared machine
it is steadier than a rate. Prints one JSON object with `results` rows for run_all.

    .venv/bin/python bench/bench_drain.py [--quick] [--rows N] [--window N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import paho.mqtt.client as paho  # noqa: E402
from daemon_harness import (  # noqa: E402
    BUFFER_FILE,
    MOVEMENTS_TOPIC,
    ROOT,
    DaemonProcess,
    cpu_s,
    fill_backlog,
    median,
    movement,
    payload,
    write_config,
)
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from gateway.logs import configure_logging  # noqa: E402
from gateway.sync.wms_acks import MAX_UNACKED  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402

POLL_S = 0.005
ACK_TOPIC = MOVEMENTS_TOPIC.rsplit("/", 1)[0] + "/ack"


def raw_publisher(port: int, rows: int, window: int, *, wms: bool) -> dict[str, float]:
    """Publish every payload keeping `window` un-PUBACKed, refilled from `on_publish`.

    With `wms` the run ends at the reference consumer's last `{"ids": ...}` ack, and, as the
    daemon's `delivery = "wms"` does, at most `MAX_UNACKED` rows wait for those acks at a time
    (the in-flight ones included); each ack makes room again.
    """
    movements = [movement(seq) for seq in range(1, rows + 1)]
    payloads = [payload(m, seq) for seq, m in enumerate(movements, start=1)]
    ids = [m.id for m in movements]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=paho.MQTTv5)
    # paho's own window is off (0): the caller keeps `window` messages in flight. With a limit set,
    # paho walks its whole in-flight map on every PUBACK (`_update_inflight`), which cost the
    # baseline a fifth of its rate; the daemon runs paho with 0 as well.
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    state = {"next": 0, "pubacks": 0, "in_flight": 0, "acked": 0, "started": 0.0, "ended": 0.0}
    unacked: set[str] = set()
    unacked_cap = MAX_UNACKED if wms else rows

    def fill() -> None:
        while state["next"] < rows and state["in_flight"] < window and len(unacked) < unacked_cap:
            index = int(state["next"])
            state["next"] = index + 1
            state["in_flight"] += 1
            if wms:
                unacked.add(ids[index])
            client.publish(MOVEMENTS_TOPIC, payloads[index], qos=1)

    def done(count: int) -> None:
        state["acked"] += count
        if state["acked"] >= rows and not state["ended"]:
            state["ended"] = time.perf_counter()
            client.disconnect()

    def start() -> None:
        state["started"] = time.perf_counter()
        fill()

    def on_connect(*_args: object) -> None:
        if wms:
            client.subscribe(ACK_TOPIC, qos=1)
        else:
            start()

    def on_subscribe(*_args: object) -> None:
        start()

    def on_publish(*_args: object) -> None:
        state["in_flight"] -= 1
        if not wms:
            done(1)
        fill()

    def on_message(_c: object, _u: object, message: paho.MQTTMessage) -> None:
        acked = [i for i in json.loads(message.payload).get("ids", []) if i in unacked]
        unacked.difference_update(acked)
        done(len(acked))
        fill()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_message = on_message
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_forever()
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    if state["acked"] < rows:
        raise RuntimeError(f"raw paho: {state['acked']} of {rows} acknowledged")
    used = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return {"elapsed_s": state["ended"] - state["started"], "cpu_s": used}


def run_raw(port: int, rows: int, window: int, delivery: str) -> dict[str, float]:
    """The raw publisher in its own process."""
    out = subprocess.run(
        [
            *(sys.executable, __file__, "raw-publisher", "--port", str(port)),
            *("--rows", str(rows), "--window", str(window), "--modes", delivery),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=600,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def run_daemon(
    template: Path, workdir: Path, port: int, rows: int, window: int, delivery: str
) -> dict[str, float]:
    """The daemon draining a fresh copy of the backlog; elapsed, CPU and start-up."""
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "state").mkdir(parents=True)
    shutil.copy(template, workdir / "state" / BUFFER_FILE)
    config = write_config(workdir, port, window=window, delivery=delivery)
    db_uri = f"{(workdir / 'state' / BUFFER_FILE).as_uri()}?mode=ro"
    with DaemonProcess(config, workdir / "daemon.log") as daemon:
        conn = sqlite3.connect(db_uri, uri=True, timeout=5)
        try:
            first = _wait_pending(conn, daemon, lambda n: n < rows, 60.0)
            cpu0 = cpu_s(daemon.pid)
            last = _wait_pending(conn, daemon, lambda n: n == 0, 600.0)
            cpu1 = cpu_s(daemon.pid)
        finally:
            conn.close()
        return {
            "elapsed_s": last - first,
            "cpu_s": cpu1 - cpu0,
            "first_mark_after_start_s": first - daemon.started_mono,
        }


def _wait_pending(
    conn: sqlite3.Connection, daemon: DaemonProcess, done: Any, timeout_s: float
) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            (count,) = conn.execute("SELECT pending FROM counters").fetchone()
        except sqlite3.Error:
            count = None
        if count is not None and done(count):
            return time.monotonic()
        if not daemon.alive():
            raise RuntimeError(f"the daemon exited; see {daemon.log}")
        time.sleep(POLL_S)
    raise RuntimeError(f"the daemon did not drain in {timeout_s} s; see {daemon.log}")


@contextlib.contextmanager
def _sink(port: int, db: Path, *, on: bool) -> Iterator[None]:
    """The reference WMS consumer with an empty store (it acks a known id at once)."""
    if not on:
        yield
        return
    sink = subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway", "wms-sink"),
            *("--mqtt-port", str(port), "--db", str(db)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        time.sleep(2.0)  # subscribed before the first message
        yield
    finally:
        sink.terminate()
        sink.wait(timeout=30)


def bench_mode(
    template: Path, tmp: Path, rows: int, window: int, rounds: int, delivery: str
) -> dict[str, Any]:
    """Alternated rounds of baseline and daemon in one delivery mode, on one broker."""
    raw: list[dict[str, float]] = []
    daemon: list[dict[str, float]] = []
    wms = delivery == "wms"
    for k in range(rounds):
        # A fresh broker (same binary and config) each run: the daemon's persistent session
        # would otherwise be handed the acks the consumer sent for the baseline's copies.
        with (
            Mosquitto(tmp / f"broker-{delivery}-raw-{k}") as broker,
            _sink(broker.port, tmp / f"wms-raw-{k}.sqlite3", on=wms),
        ):
            raw.append(run_raw(broker.port, rows, window, delivery))
        with (
            Mosquitto(tmp / f"broker-{delivery}-daemon-{k}") as broker,
            _sink(broker.port, tmp / f"wms-daemon-{k}.sqlite3", on=wms),
        ):
            daemon.append(run_daemon(template, tmp / "daemon", broker.port, rows, window, delivery))
    raw_rate = median([rows / r["elapsed_s"] for r in raw])
    daemon_rate = median([rows / r["elapsed_s"] for r in daemon])
    return {
        "delivery": delivery,
        "raw_msgs_per_s": round(raw_rate),
        "daemon_msgs_per_s": round(daemon_rate),
        "ratio": round(daemon_rate / raw_rate, 3),
        "raw_cpu_ms_per_1000": round(median([1e6 * r["cpu_s"] / rows for r in raw]), 1),
        "daemon_cpu_ms_per_1000": round(median([1e6 * r["cpu_s"] / rows for r in daemon]), 1),
        "daemon_first_mark_after_start_s": round(
            median([r["first_mark_after_start_s"] for r in daemon]), 2
        ),
        "rounds_raw_msgs_per_s": [round(rows / r["elapsed_s"]) for r in raw],
        "rounds_daemon_msgs_per_s": [round(rows / r["elapsed_s"]) for r in daemon],
    }


def main() -> int:
    """Run the benchmark (or, with `raw-publisher`, only the baseline publisher)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "raw-publisher"])
    parser.add_argument("--quick", action="store_true", help="20,000 rows, 2 rounds")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--modes", nargs="*", default=["broker", "wms"])
    parser.add_argument(
        "--wms-rows", type=int, default=None, help="rows in wms mode (the consumer is slower)"
    )
    args = parser.parse_args()
    rows = args.rows or (20_000 if args.quick else 100_000)
    configure_logging("console", "WARNING")  # stdout carries only the JSON result
    if args.role == "raw-publisher":
        wms = args.modes == ["wms"]
        print(json.dumps(raw_publisher(args.port, rows, args.window, wms=wms)))
        return 0
    rounds = args.rounds or (2 if args.quick else 3)
    wms_rows = args.wms_rows or min(rows, 20_000)
    modes = []
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp_name:
        tmp = Path(tmp_name)
        for mode in args.modes:
            n = wms_rows if mode == "wms" else rows
            template = tmp / f"backlog-{n}.sqlite3"
            if not template.exists():
                asyncio.run(fill_backlog(template, n))
            modes.append(bench_mode(template, tmp, n, args.window, rounds, mode) | {"rows": n})
    print(
        json.dumps(
            {
                "results": [row for m in modes for row in _rows(m, m["rows"], args.window, rounds)],
                "modes": modes,
            },
            indent=1,
        )
    )
    return 0


def _rows(m: dict[str, Any], rows: int, window: int, rounds: int) -> list[dict[str, Any]]:
    wms = m["delivery"] == "wms"
    what = "acknowledged by the reference WMS consumer" if wms else "PUBACKed by the broker"
    rate = {
        "name": f"drain {rows:,} movements, delivery={m['delivery']}, window {window}",
        "value": m["daemon_msgs_per_s"],
        "unit": "msg/s",
        "baseline": m["raw_msgs_per_s"],
        "baseline_unit": "msg/s raw paho" + (", same 4,000-row WMS ack limit" if wms else ""),
        "ratio": m["ratio"],
        "goal": ">= 1.0 of raw paho",
        "pass": m["ratio"] >= 1.0,
        "note": (
            f"drain, delivery={m['delivery']}: daemon timed from its first delivery mark until no "
            f"movement is undelivered ({what}); raw paho from its first publish to its last "
            f"{'id acknowledged by the same consumer' if wms else 'PUBACK'}, "
            f"same window; medians of {rounds} alternated rounds each "
            f"(daemon {m['rounds_daemon_msgs_per_s']}, raw {m['rounds_raw_msgs_per_s']} msg/s)"
        ),
    }
    cpu = {
        "name": f"CPU per 1,000 movements drained, delivery={m['delivery']}",
        "value": m["daemon_cpu_ms_per_1000"],
        "unit": "ms",
        "baseline": m["raw_cpu_ms_per_1000"],
        "baseline_unit": "ms raw paho",
        "ratio": round(m["daemon_cpu_ms_per_1000"] / m["raw_cpu_ms_per_1000"], 3),
        "goal": "",
        "pass": None,
        "note": (
            "CPU: user + system of the daemon process over its timed drain, and of the raw "
            "publisher's process over its run (lower is better)"
        ),
    }
    return [rate, cpu]


if __name__ == "__main__":
    raise SystemExit(main())
