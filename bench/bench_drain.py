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
- subscribed: the same drain (`delivery = "broker"`) with a QoS 1 subscriber on the movements
  topic in its own process (this file's `subscriber` role: paho, `loop_forever`, counting in
  `on_message`), started and subscribed before the publisher, the same for both sides on a fresh
  broker each. Timed at the subscriber, from the first message it received to the last: the drain
  as a subscribed WMS sees it. The publisher-side times (as above), the subscriber's and the
  broker's CPU are reported beside it.
- `delivery = "wms"`: the same with the reference consumer (`gateway wms-sink`) subscribed; the
  daemon's rows count as delivered only when the consumer acknowledges their ids. The baseline,
  subscribed to the same ack topic, keeps the daemon's two limits: `window` un-PUBACKed and at
  most `MAX_UNACKED` (4,000) waiting for the consumer's ack; timed from its first publish to the
  last id acknowledged. The consumer's CPU over each round is reported beside it (it is the
  bottleneck of this mode).

CPU per 1,000 messages (process user + system) is reported beside the rates: on a shared machine
it is steadier than a rate. When py-spy is installed (the `bench` extra), one more daemon drain of
the broker and subscribed modes runs under py-spy after their measured rounds, outside them: the
notes say where the daemon's CPU goes (`--no-profile` skips it). Prints one JSON object with
`results` rows for run_all.

    .venv/bin/python bench/bench_drain.py [--quick] [--rows N] [--window N] [--rounds N]
        [--modes broker subscribed wms]
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
from cpu_profile import profile_shares, py_spy, top_functions  # noqa: E402
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
_MODES = ("broker", "subscribed", "wms")


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
    template: Path,
    workdir: Path,
    port: int,
    rows: int,
    window: int,
    delivery: str,
    profile: Path | None = None,
) -> dict[str, float]:
    """The daemon draining a fresh copy of the backlog; elapsed, CPU and start-up."""
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "state").mkdir(parents=True)
    shutil.copy(template, workdir / "state" / BUFFER_FILE)
    config = write_config(workdir, port, window=window, delivery=delivery)
    db_uri = f"{(workdir / 'state' / BUFFER_FILE).as_uri()}?mode=ro"
    with DaemonProcess(config, workdir / "daemon.log", profile) as daemon:
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
def _sink(port: int, db: Path, *, on: bool) -> Iterator[subprocess.Popen[bytes] | None]:
    """The reference WMS consumer with an empty store (it acks a known id at once)."""
    if not on:
        yield None
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
        yield sink
    finally:
        sink.terminate()
        sink.wait(timeout=30)


def subscriber(port: int, rows: int, ready: Path) -> dict[str, float]:
    """Receive `rows` messages at QoS 1 on the movements topic; times and CPU from the first one.

    `ready` is written once the broker has granted the subscription.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=paho.MQTTv5)
    state = {"count": 0, "first": 0.0, "last": 0.0, "cpu0": 0.0, "cpu1": 0.0, "bytes": 0}

    def on_connect(*_args: object) -> None:
        client.subscribe(MOVEMENTS_TOPIC, qos=1)

    def on_subscribe(*_args: object) -> None:
        ready.write_text("subscribed")

    def on_message(_c: object, _u: object, message: paho.MQTTMessage) -> None:
        if not state["count"]:
            state["first"] = time.monotonic()
            state["cpu0"] = _process_cpu_s()
        state["count"] += 1
        state["bytes"] += len(message.payload)
        if state["count"] >= rows:
            state["last"] = time.monotonic()
            state["cpu1"] = _process_cpu_s()
            client.disconnect()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_forever()
    return {
        "received": state["count"],
        "first_mono": state["first"],
        "last_mono": state["last"],
        "elapsed_s": state["last"] - state["first"],
        "cpu_s": state["cpu1"] - state["cpu0"],
        "payload_bytes": state["bytes"],
    }


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Subscriber:
    """The subscriber role in its own process: started, subscribed, then its result read at exit."""

    def __init__(self, port: int, rows: int, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._ready = workdir / "subscribed"
        self._ready.unlink(missing_ok=True)
        self._out = (workdir / "subscriber.json").open("w")
        self._proc = subprocess.Popen(
            [
                *(sys.executable, __file__, "subscriber", "--port", str(port)),
                *("--rows", str(rows), "--ready", str(self._ready)),
            ],
            stdout=self._out,
            cwd=ROOT,
        )
        self._path = workdir / "subscriber.json"

    def wait_subscribed(self, timeout_s: float = 30.0) -> None:
        """Return once the broker granted the subscription."""
        deadline = time.monotonic() + timeout_s
        while not self._ready.exists():
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError("the subscriber did not subscribe")
            time.sleep(0.01)

    def result(self, timeout_s: float = 120.0) -> dict[str, float]:
        """Wait until it has every message, and return its figures."""
        try:
            self._proc.wait(timeout=timeout_s)
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._out.close()
        if self._proc.returncode != 0:
            raise RuntimeError(f"the subscriber failed (exit {self._proc.returncode})")
        result: dict[str, float] = json.loads(self._path.read_text())
        return result


@contextlib.contextmanager
def _subscribed(port: int, rows: int, workdir: Path, *, on: bool) -> Iterator[_Subscriber | None]:
    """A QoS 1 subscriber on the movements topic, subscribed before the publisher starts."""
    if not on:
        yield None
        return
    sub = _Subscriber(port, rows, workdir)
    sub.wait_subscribed()
    yield sub


def _with_subscriber(
    run: dict[str, float], sub: _Subscriber | None, broker: Mosquitto, broker_cpu0: float
) -> dict[str, float]:
    """The round's figures with the subscriber's and the broker's added (when subscribed)."""
    if sub is None:
        return run
    seen = sub.result()
    assert broker.proc is not None
    return run | {
        "sub_elapsed_s": seen["elapsed_s"],
        "sub_cpu_s": seen["cpu_s"],
        "sub_received": seen["received"],
        "broker_cpu_s": cpu_s(broker.proc.pid) - broker_cpu0,
    }


def bench_mode(
    template: Path, tmp: Path, rows: int, window: int, rounds: int, mode: str
) -> dict[str, Any]:
    """Alternated rounds of baseline and daemon in one mode, each side on a fresh broker."""
    raw: list[dict[str, float]] = []
    daemon: list[dict[str, float]] = []
    wms = mode == "wms"
    subscribed = mode == "subscribed"
    delivery = "wms" if wms else "broker"
    for k in range(rounds):
        # A fresh broker (same binary and config) each run: the daemon's persistent session
        # would otherwise be handed the acks the consumer sent for the baseline's copies.
        with (
            Mosquitto(tmp / f"broker-{mode}-raw-{k}") as broker,
            _sink(broker.port, tmp / f"wms-raw-{k}.sqlite3", on=wms) as sink,
            _subscribed(broker.port, rows, tmp / f"sub-raw-{k}", on=subscribed) as sub,
        ):
            broker_cpu0 = cpu_s(broker.proc.pid) if broker.proc else 0.0
            sink_cpu0 = cpu_s(sink.pid) if sink else 0.0
            run = run_raw(broker.port, rows, window, delivery)
            if sink is not None:
                run["consumer_cpu_s"] = cpu_s(sink.pid) - sink_cpu0
            raw.append(_with_subscriber(run, sub, broker, broker_cpu0))
        with (
            Mosquitto(tmp / f"broker-{mode}-daemon-{k}") as broker,
            _sink(broker.port, tmp / f"wms-daemon-{k}.sqlite3", on=wms) as sink,
            _subscribed(broker.port, rows, tmp / f"sub-daemon-{k}", on=subscribed) as sub,
        ):
            broker_cpu0 = cpu_s(broker.proc.pid) if broker.proc else 0.0
            sink_cpu0 = cpu_s(sink.pid) if sink else 0.0
            run = run_daemon(template, tmp / "daemon", broker.port, rows, window, delivery)
            if sink is not None:
                run["consumer_cpu_s"] = cpu_s(sink.pid) - sink_cpu0
            daemon.append(_with_subscriber(run, sub, broker, broker_cpu0))
    out = {
        "delivery": delivery,
        "mode": mode,
        **_rates(raw, daemon, rows, "elapsed_s"),
        "raw_cpu_ms_per_1000": round(median([1e6 * r["cpu_s"] / rows for r in raw]), 1),
        "daemon_cpu_ms_per_1000": round(median([1e6 * r["cpu_s"] / rows for r in daemon]), 1),
        "daemon_first_mark_after_start_s": round(
            median([r["first_mark_after_start_s"] for r in daemon]), 2
        ),
    }
    if wms:
        for name, runs in (("raw", raw), ("daemon", daemon)):
            out[f"{name}_consumer_cpu_ms_per_1000"] = round(
                median([1e6 * r["consumer_cpu_s"] / rows for r in runs]), 1
            )
    if subscribed:
        out["publisher_side"] = _rates(raw, daemon, rows, "elapsed_s")
        out |= _rates(raw, daemon, rows, "sub_elapsed_s")
        for key in ("sub_cpu_s", "broker_cpu_s"):
            name = key.removesuffix("_s")
            out[f"raw_{name}_ms_per_1000"] = round(median([1e6 * r[key] / rows for r in raw]), 1)
            out[f"daemon_{name}_ms_per_1000"] = round(
                median([1e6 * r[key] / rows for r in daemon]), 1
            )
        out["received_per_round"] = {
            "raw": [r["sub_received"] for r in raw],
            "daemon": [r["sub_received"] for r in daemon],
        }
    return out


def profile_mode(template: Path, tmp: Path, rows: int, window: int, mode: str) -> dict[str, Any]:
    """One more daemon drain of `mode` under py-spy, outside the measured rounds: CPU shares."""
    profile = tmp / f"drain-{mode}.py-spy"
    with (
        Mosquitto(tmp / f"broker-{mode}-profiled") as broker,
        _subscribed(broker.port, rows, tmp / "sub-profiled", on=mode == "subscribed") as sub,
    ):
        run = run_daemon(template, tmp / "daemon", broker.port, rows, window, "broker", profile)
        if sub is not None:
            sub.result()
    return {
        "msgs_per_s_profiled": round(rows / run["elapsed_s"]),
        "shares_pct": profile_shares(profile, without_startup=True),
        "top_functions": top_functions(profile),
    }


def _rates(
    raw: list[dict[str, float]], daemon: list[dict[str, float]], rows: int, key: str
) -> dict[str, Any]:
    raw_rate = median([rows / r[key] for r in raw])
    daemon_rate = median([rows / r[key] for r in daemon])
    return {
        "raw_msgs_per_s": round(raw_rate),
        "daemon_msgs_per_s": round(daemon_rate),
        "ratio": round(daemon_rate / raw_rate, 3),
        "rounds_raw_msgs_per_s": [round(rows / r[key]) for r in raw],
        "rounds_daemon_msgs_per_s": [round(rows / r[key]) for r in daemon],
    }


def main() -> int:
    """Run the benchmark (or, with `raw-publisher`, only the baseline publisher)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "role", nargs="?", default="bench", choices=["bench", "raw-publisher", "subscriber"]
    )
    parser.add_argument("--quick", action="store_true", help="20,000 rows, 2 rounds")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--modes", nargs="*", default=["broker", "subscribed", "wms"], choices=_MODES
    )
    parser.add_argument("--ready", type=Path, help="subscriber: written once subscribed")
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="no extra py-spy drain of the broker and subscribed modes (when py-spy is installed)",
    )
    parser.add_argument(
        "--wms-rows", type=int, default=None, help="rows in wms mode (the consumer is slower)"
    )
    args = parser.parse_args()
    rows = args.rows or (20_000 if args.quick else 100_000)
    configure_logging("console", "WARNING")  # stdout carries only the JSON result
    if args.role == "subscriber":
        print(json.dumps(subscriber(args.port, rows, args.ready)))
        return 0
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
            measured = bench_mode(template, tmp, n, args.window, rounds, mode) | {"rows": n}
            if mode != "wms" and not args.no_profile and py_spy() is not None:
                measured["profile"] = profile_mode(template, tmp, n, args.window, mode)
            modes.append(measured)
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
    if m["mode"] == "subscribed":
        return _subscribed_rows(m, rows, window, rounds)
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
            + (
                f"; the consumer's CPU per 1,000 movements (whole round): "
                f"{m['daemon_consumer_cpu_ms_per_1000']} ms with the daemon, "
                f"{m['raw_consumer_cpu_ms_per_1000']} ms with raw paho"
                if wms
                else ""
            )
        ),
    }
    return [rate, _cpu_row(m, f"delivery={m['delivery']}")]


def _subscribed_rows(
    m: dict[str, Any], rows: int, window: int, rounds: int
) -> list[dict[str, Any]]:
    pub = m["publisher_side"]
    rate = {
        "name": (
            f"drain {rows:,} movements to a QoS 1 subscriber (own process), delivery=broker, "
            f"window {window}, as the subscriber received them"
        ),
        "value": m["daemon_msgs_per_s"],
        "unit": "msg/s",
        "baseline": m["raw_msgs_per_s"],
        "baseline_unit": "msg/s raw paho, same subscriber",
        "ratio": m["ratio"],
        "goal": ">= 1.0 of raw paho",
        "pass": m["ratio"] >= 1.0,
        "note": (
            "drain, subscribed: a paho subscriber in its own process (QoS 1 on the movements "
            "topic, `loop_forever`, counting in `on_message`) subscribed before the publisher "
            "starts, on a fresh broker for each side; timed at the subscriber from the first "
            "message it received to the last; medians of "
            f"{rounds} alternated rounds each (daemon {m['rounds_daemon_msgs_per_s']}, raw "
            f"{m['rounds_raw_msgs_per_s']} msg/s; received per round {m['received_per_round']}). "
            "Publisher side, timed as in the unsubscribed row: daemon "
            f"{pub['daemon_msgs_per_s']:,} vs raw {pub['raw_msgs_per_s']:,} msg/s (ratio "
            f"{pub['ratio']}; rounds daemon {pub['rounds_daemon_msgs_per_s']}, raw "
            f"{pub['rounds_raw_msgs_per_s']}). CPU per 1,000 movements over the drain: "
            f"subscriber {m['daemon_sub_cpu_ms_per_1000']} ms with the daemon, "
            f"{m['raw_sub_cpu_ms_per_1000']} ms with raw paho; mosquitto "
            f"{m['daemon_broker_cpu_ms_per_1000']} ms with the daemon, "
            f"{m['raw_broker_cpu_ms_per_1000']} ms with raw paho (whole round)"
        ),
    }
    return [rate, _cpu_row(m, "subscribed")]


def _cpu_row(m: dict[str, Any], what: str) -> dict[str, Any]:
    return {
        "name": f"CPU per 1,000 movements drained, {what}",
        "value": m["daemon_cpu_ms_per_1000"],
        "unit": "ms",
        "baseline": m["raw_cpu_ms_per_1000"],
        "baseline_unit": "ms raw paho",
        "ratio": round(m["daemon_cpu_ms_per_1000"] / m["raw_cpu_ms_per_1000"], 3),
        "goal": "",
        "pass": None,
        "note": (
            "CPU: user + system of the daemon process over its timed drain, and of the raw "
            "publisher's process over its run (lower is better)" + _profiled(m)
        ),
    }


def _profiled(m: dict[str, Any]) -> str:
    profile = m.get("profile")
    if not profile:
        return ""
    return (
        f"; where the daemon's CPU goes, from one more drain under py-spy outside the rounds "
        f"({profile['msgs_per_s_profiled']:,} msg/s; samples holding the GIL, the daemon's "
        f"start-up imports left out): "
        f"{profile['shares_pct']}; top leaf functions: {profile['top_functions']}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
