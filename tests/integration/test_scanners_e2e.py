"""Scanners end to end: serial on a pty, ten TCP handhelds, an MQTT handheld, restarts mid-RMA.

Each test starts its own mosquitto, runs `gateway run` as a subprocess and checks what a WMS-side
subscriber receives on the movements topic.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import tty
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Mosquitto, free_port
from tests.support.daemon import DaemonProcess, buffer_stats, wait_until, write_config
from tests.support.scans import item_scan
from tests.support.wms import Collector, publish, retained

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
SERIAL_READER = "bench-1"
STEP_TIMEOUT_S = 30.0


class Pty:
    """A pty whose slave stands for the scanner's device node; closing the master unplugs it."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)

    def write(self, data: bytes) -> None:
        """Write all of `data` to the master (the scanner sending)."""
        view = memoryview(data)
        while view:
            written = os.write(self.master, view)
            view = view[written:]

    def close(self) -> None:
        """Unplug."""
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


def _plug(link: Path, pty: Pty) -> None:
    """Point the by-id link at this pty atomically, as udev does on plug."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(pty.path)
    tmp.replace(link)


def _rss_kb(pid: int) -> int:
    """The process's resident set size in kB from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def _movements(collector: Collector) -> list[dict[str, Any]]:
    """First copy of every movement, in arrival order."""
    seen: dict[str, dict[str, Any]] = {}
    for message in collector.received():
        body = message.json()
        seen.setdefault(body["id"], body)
    return list(seen.values())


def _gtin_serial(scan: str) -> tuple[str, str]:
    """GTIN and serial of an `item_scan` string (`]C101<gtin14>21<serial>`)."""
    return scan[5:19], scan[21:]


def _serial_config(tmp_path: Path, broker: Mosquitto, link: Path, kind: str) -> Path:
    return write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[{"id": "bench-1", "kind": kind}],
        readers=[
            {
                "kind": "serial-scanner",
                "id": SERIAL_READER,
                "url": str(link),
                "station": "bench-1",
                "suffix": "CR",
                "max_scan_bytes": 4096,
            }
        ],
    )


def _rejected(daemon: DaemonProcess, component: str = "serial_scanner") -> list[dict[str, Any]]:
    """`scan_rejected` log events of the serial reader, by the framer or by the app (parsing)."""
    return [
        e
        for e in daemon.log_events()
        if e.get("event") == "scan_rejected"
        and e.get("reader") == SERIAL_READER
        and e.get("component") == component
    ]


def _find_reader_health(value: Any, reader: str) -> dict[str, Any] | None:
    """The `readers.<reader>` dict anywhere inside the status payload."""
    if isinstance(value, dict):
        readers = value.get("readers")
        if isinstance(readers, dict) and isinstance(readers.get(reader), dict):
            found: dict[str, Any] = readers[reader]
            return found
        for child in value.values():
            hit = _find_reader_health(child, reader)
            if hit is not None:
                return hit
    return None


def test_serial_scanner_on_pty_with_noise_keeps_every_valid_scan_and_flat_memory(
    tmp_path: Path,
) -> None:
    rng = random.Random(4)
    with Mosquitto(tmp_path / "mosquitto") as broker:
        pty = Pty()
        link = tmp_path / "usb-Honeywell_1900-if00"
        _plug(link, pty)
        config = _serial_config(tmp_path, broker, link, "receiving")
        collector = Collector(broker.port, [f"{BASE}/movements"]).start()
        try:
            with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
                daemon.wait_for_log("serial_scanner_opened", timeout_s=STEP_TIMEOUT_S)
                assert daemon.proc is not None
                pid = daemon.proc.pid
                sent: list[str] = []
                binary_lines = 0
                garbage_lines = 0
                rss_samples: list[int] = []
                warm_rss = 0
                for index in range(1000):
                    scan = item_scan(index)
                    pty.write(scan.encode() + b"\r")
                    sent.append(scan)
                    roll = rng.random()
                    if roll < 0.05:
                        # Printable text that is no barcode: framed, rejected by the app's parse.
                        pty.write(b"hello-this-is-not-a-barcode\r")
                        garbage_lines += 1
                    elif roll < 0.10:
                        # Binary noise up to a CR: one control_byte rejection per line.
                        noise = bytes(rng.choice([0, 1, 2, 7, 0x1B, 0x7F]) for _ in range(12))
                        pty.write(noise + b"\r")
                        binary_lines += 1
                    if index == 500:
                        # 100 kB with no terminator, then its terminator alone: one too_long
                        # rejection, and the framer resyncs on that CR so scan 501 survives.
                        pty.write(b"A" * 100_000)
                        pty.write(b"\r")
                    if index == 100:
                        warm_rss = _rss_kb(pid)
                    if index % 50 == 0:
                        rss_samples.append(_rss_kb(pid))
                    time.sleep(0.02)
                expected_bad = binary_lines + 1
                collector.wait_for(lambda c: len(_movements(c)) >= len(sent), 60, "1,000 movements")
                wait_until(lambda: len(_rejected(daemon)) >= expected_bad, 20, "rejections logged")
                rss_samples.append(_rss_kb(pid))
                time.sleep(2.5)  # two status intervals, so the retained status is current
                status_raw = retained(broker.port, f"{BASE}/status")
                assert daemon.alive()
        finally:
            collector.stop()
            pty.close()

    movements = _movements(collector)
    got = [(m["type"], m["station"], m["item"]["gtin"], m["item"]["serial"]) for m in movements]
    want = [("receipt", "bench-1", *_gtin_serial(s)) for s in sent]
    assert sorted(got) == sorted(want)
    assert len(movements) == len(sent), "garbage lines must make no movement"
    rejected = _rejected(daemon)
    reasons = sorted(str(e.get("reason")) for e in rejected)
    assert reasons.count("too_long") == 1, reasons
    assert reasons.count("control_byte") == binary_lines, reasons
    assert len(rejected) == expected_bad
    unparsed = _rejected(daemon, "app")
    assert len(unparsed) == garbage_lines
    assert {e.get("data") for e in unparsed} == {"hello-this-is-not-a-barcode"}
    assert status_raw is not None
    health = _find_reader_health(json.loads(status_raw), SERIAL_READER)
    assert health is not None, status_raw
    assert health["bad_input"] == expected_bad
    growth_kb = max(rss_samples) - warm_rss
    assert growth_kb < 20_000, f"RSS grew {growth_kb} kB after warm-up: {rss_samples}"


def test_serial_unplug_and_replug_reconnects_and_loses_nothing_sent_while_connected(
    tmp_path: Path,
) -> None:
    with Mosquitto(tmp_path / "mosquitto") as broker:
        first = Pty()
        link = tmp_path / "usb-Honeywell_1900-if00"
        _plug(link, first)
        config = _serial_config(tmp_path, broker, link, "disposal")
        collector = Collector(broker.port, [f"{BASE}/movements"]).start()
        second: Pty | None = None
        try:
            with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
                daemon.wait_for_log("serial_scanner_opened", timeout_s=STEP_TIMEOUT_S)
                before = [item_scan(i) for i in range(50)]
                for scan in before:
                    first.write(scan.encode() + b"\r")
                    time.sleep(0.01)
                collector.wait_for(lambda c: len(_movements(c)) >= 50, 30, "50 before unplug")
                first.close()
                link.unlink()
                daemon.wait_for_log("serial_scanner_lost", timeout_s=STEP_TIMEOUT_S)
                time.sleep(1.0)  # unplugged for a while: the driver retries against nothing
                second = Pty()
                _plug(link, second)
                daemon.wait_for_log("reader_reconnected", timeout_s=STEP_TIMEOUT_S)
                daemon.wait_for_log("serial_scanner_opened", timeout_s=STEP_TIMEOUT_S, count=2)
                after = [item_scan(i) for i in range(50, 100)]
                for scan in after:
                    second.write(scan.encode() + b"\r")
                    time.sleep(0.01)
                collector.wait_for(lambda c: len(_movements(c)) >= 100, 30, "100 movements")
                assert daemon.alive()
        finally:
            collector.stop()
            first.close()
            if second is not None:
                second.close()

    got = sorted((m["type"], m["item"]["gtin"], m["item"]["serial"]) for m in _movements(collector))
    assert got == sorted(("disposal", *_gtin_serial(s)) for s in before + after)


STATION_KINDS = ["receiving", "inspection", "restock", "disposal"]


def _handheld_script(
    number: int, kind: str, first_item: int
) -> tuple[list[str], list[dict[str, Any]]]:
    """Lines a handheld sends and the movements they must make (station `st-N`)."""
    station = f"st-{number}"
    items = [item_scan(first_item + k) for k in range(6)]
    lines: list[str] = []
    expected: list[dict[str, Any]] = []

    def item(scan: str, movement: str, **extra: Any) -> None:
        lines.append(scan)
        gtin, serial = _gtin_serial(scan)
        expected.append(
            {"type": movement, "station": station, "gtin": gtin, "serial": serial, **extra}
        )

    if kind == "receiving":
        lines.append(f"RMA-A{number}")
        item(items[0], "receipt", rma=f"RMA-A{number}")
        item(items[1], "receipt", rma=f"RMA-A{number}")
        lines.append(f"RMA-B{number}")
        item(items[2], "receipt", rma=f"RMA-B{number}")
        lines.append("RMA-CLOSE")
        item(items[3], "receipt", rma=None)
    elif kind == "inspection":
        lines.append("DISP-REPAIR")
        item(items[0], "inspection", disposition="repair")
        item(items[1], "inspection", disposition="repair")
        lines.append("DISP-RECYCLE")
        item(items[2], "inspection", disposition="recycle")
        lines.append("DISP-DONATE")
        item(items[3], "inspection", disposition="donate")
    elif kind == "restock":
        lines.append(f"LOC-A-{number}")
        item(items[0], "restock", location=f"LOC-A-{number}")
        item(items[1], "restock", location=f"LOC-A-{number}")
        lines.append(f"LOC-B-{number}")
        item(items[2], "restock", location=f"LOC-B-{number}")
    else:
        for scan in items[:4]:
            item(scan, "disposal")
    return lines, expected


def _actual(movement: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    out = {
        "type": movement["type"],
        "station": movement["station"],
        "gtin": movement["item"]["gtin"],
        "serial": movement["item"]["serial"],
    }
    for key in keys:
        out[key] = movement.get(key)
    return out


def _send_lines(port: int, device: str, lines: list[str], seed: int, errors: list[str]) -> None:
    rng = random.Random(seed)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"device:{device}\n".encode())
            for line in lines:
                sock.sendall(line.encode() + b"\n")
                time.sleep(rng.uniform(0.0, 0.05))
            time.sleep(0.5)  # let the last line be read before the FIN
    except OSError as exc:
        errors.append(f"{device}: {exc}")


def test_ten_tcp_handhelds_and_one_mqtt_handheld_get_the_right_context(tmp_path: Path) -> None:
    port = free_port()
    stations = [{"id": f"st-{n}", "kind": STATION_KINDS[n % 4]} for n in range(10)]
    stations.append({"id": "st-mqtt", "kind": "receiving"})
    device_stations = {f"hh-{n}": f"st-{n}" for n in range(10)}
    scripts = [_handheld_script(n, STATION_KINDS[n % 4], 1000 + 10 * n) for n in range(10)]
    mqtt_lines, mqtt_expected = _handheld_script(99, "receiving", 5000)
    for movement in mqtt_expected:
        movement["station"] = "st-mqtt"
    with Mosquitto(tmp_path / "mosquitto") as broker:
        config = write_config(
            tmp_path / "gateway.toml",
            broker_port=broker.port,
            state_dir=tmp_path / "state",
            stations=stations,
            readers=[
                {
                    "kind": "tcp-scanner",
                    "id": "handhelds",
                    "listen": f"127.0.0.1:{port}",
                    "station": "st-0",
                    "device_stations": device_stations,
                },
                {
                    "kind": "mqtt-scanner",
                    "id": "mqtt-handhelds",
                    "device_stations": {"hh-mqtt": "st-mqtt"},
                },
            ],
        )
        collector = Collector(broker.port, [f"{BASE}/movements"]).start()
        try:
            with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
                daemon.wait_for_log("tcp_scanner_listening", timeout_s=STEP_TIMEOUT_S)
                errors: list[str] = []
                threads = [
                    threading.Thread(
                        target=_send_lines,
                        args=(port, f"hh-{n}", scripts[n][0], n, errors),
                        name=f"hh-{n}",
                    )
                    for n in range(10)
                ]
                for thread in threads:
                    thread.start()
                for line in mqtt_lines:
                    publish(broker.port, f"{BASE}/scans/hh-mqtt", line.encode())
                for thread in threads:
                    thread.join(timeout=30)
                assert not errors, errors
                total = sum(len(e) for _, e in scripts) + len(mqtt_expected)
                collector.wait_for(lambda c: len(_movements(c)) >= total, 30, f"{total} movements")
                assert daemon.alive()
        finally:
            collector.stop()

    movements = _movements(collector)
    keys = ["rma", "disposition", "location"]
    expected = [e for _, exp in scripts for e in exp] + mqtt_expected
    full_expected = [dict.fromkeys(keys) | e for e in expected]
    got = [_actual(m, keys) for m in movements]

    def order(d: dict[str, Any]) -> str:
        return json.dumps(d, sort_keys=True)

    assert sorted(got, key=order) == sorted(full_expected, key=order)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_between_rma_label_and_items_keeps_the_rma(tmp_path: Path, how: str) -> None:
    port = free_port()
    with Mosquitto(tmp_path / "mosquitto") as broker:
        config = write_config(
            tmp_path / "gateway.toml",
            broker_port=broker.port,
            state_dir=tmp_path / "state",
            stations=[{"id": "door-3", "kind": "receiving"}],
            readers=[
                {
                    "kind": "tcp-scanner",
                    "id": "door-3-handheld",
                    "listen": f"127.0.0.1:{port}",
                    "station": "door-3",
                }
            ],
        )
        collector = Collector(broker.port, [f"{BASE}/movements"]).start()
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        try:
            daemon.start()
            daemon.wait_for_log("tcp_scanner_listening", timeout_s=STEP_TIMEOUT_S)
            errors: list[str] = []
            _send_lines(port, "hh-1", ["RMA-000777"], 1, errors)
            assert not errors, errors
            wait_until(
                lambda: buffer_stats(config).get("journal_last_id", 0) >= 1,
                STEP_TIMEOUT_S,
                "the RMA label journaled",
            )
            if how == "sigkill":
                daemon.kill()
            else:
                assert daemon.terminate() == 0
            daemon.start()
            daemon.wait_for_log("tcp_scanner_listening", timeout_s=STEP_TIMEOUT_S, count=2)
            items = [item_scan(i) for i in range(3)]
            _send_lines(port, "hh-1", items, 2, errors)
            assert not errors, errors
            collector.wait_for(lambda c: len(_movements(c)) >= 3, 30, "three receipts")
        finally:
            if daemon.alive():
                daemon.terminate()
            collector.stop()

    got = sorted(
        (m["type"], m["item"]["gtin"], m["item"]["serial"], m["rma"]) for m in _movements(collector)
    )
    assert got == sorted(("receipt", *_gtin_serial(s), "RMA-000777") for s in items)
