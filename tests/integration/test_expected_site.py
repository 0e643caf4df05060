"""Site-wide announcements: one publish on `{prefix}/{site}/expected-returns` reaches every door."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.signing import sign_command
from tests.support.broker import Mosquitto, free_port
from tests.support.daemon import DaemonProcess, run_gateway, wait_until, write_config
from tests.support.scans import gtin14, item_scan
from tests.support.wms import Collector, publish, retained

pytestmark = pytest.mark.slow

SITE = "milan-returns"
DOORS = ("dock-1", "dock-2")
KEY = "site-key-for-tests"


def _gtin_serial(index: int) -> tuple[str, str]:
    return gtin14("0614141" + str(10000 + index % 90000)[:5]), f"{index:08d}"


def _rma(name: str, indexes: list[int]) -> dict[str, Any]:
    items = []
    for index in indexes:
        gtin, serial = _gtin_serial(index)
        items.append({"gtin": gtin, "serial": serial})
    return {"rma": name, "items": items}


def _scan(port: int, data: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"device:hh-1\r\n{data}\r\n".encode())
        time.sleep(0.2)


def test_two_gateways_of_a_site_both_take_a_site_wide_announcement(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    collector = Collector(
        broker.port, [f"returns/{SITE}/+/movements", f"returns/{SITE}/+/cmd-result/+"]
    )
    collector.start()
    daemons: list[DaemonProcess] = []
    ports: dict[str, int] = {}
    try:
        for door in DOORS:
            ports[door] = free_port()
            config = write_config(
                tmp_path / f"{door}.toml",
                broker_port=broker.port,
                state_dir=tmp_path / door,
                stations=[{"id": "door", "kind": "receiving"}],
                readers=[
                    {
                        "kind": "tcp-scanner",
                        "id": "handhelds",
                        "listen": f"127.0.0.1:{ports[door]}",
                        "station": "door",
                    }
                ],
                gateway_id=door,
                site=SITE,
                extra='[security]\ncommand_key_env = "DOCK_COMMAND_KEY"\n',
            )
            daemon = DaemonProcess(config, tmp_path / f"{door}.log", env={"DOCK_COMMAND_KEY": KEY})
            daemon.start()
            daemons.append(daemon)
        for door in DOORS:
            wait_until(lambda door=door: _online(broker, door), 30, f"{door} online")
        command = {
            "action": "add",
            "rmas": [_rma("RMA-1", [1, 2]), {"rma": "BAD", "items": "none"}, _rma("RMA-2", [3])],
        }
        unsigned = json.dumps(command).encode()
        publish(broker.port, f"returns/{SITE}/expected-returns", unsigned)
        collector.wait_for(lambda c: len(c.received("/cmd-result/expected-returns")) >= 2, 30, "")
        refusals = [m.json() for m in collector.received("/cmd-result/expected-returns")]
        assert all(r["ok"] is False for r in refusals), "an unsigned command must be refused"
        signed = sign_command(
            "expected-returns", unsigned, KEY.encode(), time.time(), "site-nonce-1"
        )
        publish(broker.port, f"returns/{SITE}/expected-returns", signed)
        collector.wait_for(lambda c: len(c.received("/cmd-result/expected-returns")) >= 4, 30, "")
        replies = [m.json() for m in collector.received("/cmd-result/expected-returns")][2:]
        assert sorted(r["gateway"] for r in replies) == list(DOORS), "each door answers once"
        for reply in replies:
            assert (reply["ok"], reply["accepted"], reply["open"]) == (True, 2, 2)
            assert [(r["index"], r["rma"]) for r in reply["refused"]] == [(1, "BAD")]
        # Items of RMA-1 arrive at two doors; RMA-2 at the second door only.
        _scan(ports["dock-1"], item_scan(1))
        _scan(ports["dock-2"], item_scan(2))
        _scan(ports["dock-2"], item_scan(3))
        _scan(ports["dock-1"], item_scan(9))
        collector.wait_for(lambda c: len(c.received()) >= 5, 30, "four receipts, one completion")
        time.sleep(0.5)
    finally:
        for daemon in daemons:
            if daemon.alive():
                daemon.terminate()
        collector.stop()
        broker.stop()
    movements = [m.json() for m in collector.received()]
    got = sorted((m["gateway"], m["type"], m["rma"] or "", m["expected"]) for m in movements)
    assert got == [
        ("dock-1", "receipt", "", False),
        ("dock-1", "receipt", "RMA-1", True),
        ("dock-2", "receipt", "RMA-1", True),
        ("dock-2", "receipt", "RMA-2", True),
        ("dock-2", "rma-complete", "RMA-2", True),
    ], "each door completes only what it saw whole: RMA-1 is complete at no single door"


def _online(broker: Mosquitto, door: str) -> bool:
    payload = retained(broker.port, f"returns/{SITE}/{door}/status", timeout_s=1.0)
    return payload is not None and json.loads(payload).get("state") == "online"


def test_cli_import_and_stats_beside_a_running_daemon(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    port = free_port()
    config = write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[{"id": "door", "kind": "receiving"}],
        readers=[
            {
                "kind": "tcp-scanner",
                "id": "handhelds",
                "listen": f"127.0.0.1:{port}",
                "station": "door",
            }
        ],
        gateway_id="dock-1",
        site=SITE,
    )
    rows = ["rma,customer,epc,gtin,serial,qty,expires_at"]
    for index in range(3000):
        gtin, serial = _gtin_serial(index)
        rows.append(f"RMA-{index // 2:05d},C-1,,{gtin},{serial},1,")
    rows.append("RMA-BAD,C-1,,,,1,")  # an item with neither EPC nor GTIN: refused, line named
    csv_path = tmp_path / "returns.csv"
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    collector = Collector(broker.port, [f"returns/{SITE}/+/movements"])
    collector.start()
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        daemon.start()
        wait_until(lambda: _online(broker, "dock-1"), 30, "dock-1 online")
        _scan(port, item_scan(1))  # before the import: nobody announced it
        collector.wait_for(lambda c: len(c.received()) >= 1, 30, "the first receipt")
        imported = run_gateway("expected", "import", str(csv_path), "--config", str(config))
        assert imported.returncode == 2, "a refused RMA makes the exit code 2"
        result = json.loads(imported.stdout)
        assert result["accepted"] == 1500
        assert [(r["rma"], r["line"]) for r in result["refused"]] == [("RMA-BAD", 3002)]
        _scan(port, item_scan(3))  # after the import: the running daemon sees it
        collector.wait_for(lambda c: len(c.received()) >= 2, 30, "the second receipt")
        stats = run_gateway("expected", "stats", "--config", str(config))
        assert stats.returncode == 0, stats.stderr
        counts = json.loads(stats.stdout)
        assert (counts["rmas"], counts["open_rmas"], counts["lines"]) == (1500, 1500, 3000)
        assert daemon.alive()
    finally:
        if daemon.alive():
            daemon.terminate()
        collector.stop()
        broker.stop()
    got = [
        (m.json()["item"]["serial"], m.json()["rma"], m.json()["expected"])
        for m in collector.received()
    ]
    assert got == [("00000001", None, False), ("00000003", "RMA-00001", True)]
