"""The daemon SIGKILLed 20 times at random moments while scans stream in and the broker flaps.

What the guarantee covers: what reached the journal or the outbox is never lost, and a movement
re-derived after a crash keeps its id. Input that never reached the daemon is not covered: RFID
reads made while the daemon is dead are lost at the reader (as with a real reader whose client is
gone), so this loop drives the replay path, whose file is read again from its fixed epoch after
every restart: every scan in it must end up as exactly one movement id at the WMS. The RFID path
runs its own kill loop through the real simulator in test_kill_loop_rfid.py.

Sizes: 3,000 scans at 200/s (15 s of input), 20 kills after 0.4-2.5 s of uptime each (seed 20),
the broker stopped and started again twice during the loop.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, buffer_stats, wait_until, write_config
from tests.support.scans import item_scan, scan_events, write_jsonl
from tests.support.wms import Collector

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
SCANS = 3_000
RATE_PER_S = 200
KILLS = 20
BROKER_DOWN_AT = {4: 7, 12: 15}  # kill number at which it stops -> kill number at which it starts


def _expected_items() -> dict[str, str]:
    """serial -> GTIN of every scan sent, derived from the scan text, not from the product."""
    items = {}
    for index in range(SCANS):
        data = item_scan(index)
        assert data.startswith("]C101")
        gtin, serial = data[5:19], data[21:]
        items[serial] = gtin
    return items


def test_twenty_sigkills_with_a_flapping_broker_lose_and_double_nothing(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    collector = Collector(broker.port, [f"{BASE}/movements"])
    collector.start()
    replay = write_jsonl(tmp_path / "events.jsonl", scan_events(SCANS))
    config = write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[{"id": "door-3", "kind": "receiving"}],
        readers=[
            {
                "kind": "replay",
                "id": "replay-1",
                "station": "door-3",
                "file": str(replay),
                "rate_per_s": RATE_PER_S,
            }
        ],
        mqtt={"max_inflight": 20},
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    rng = random.Random(20)
    restarts_when_down = {start: stop for stop, start in BROKER_DOWN_AT.items()}
    try:
        daemon.start()
        for kill in range(KILLS):
            time.sleep(rng.uniform(0.4, 2.5))
            assert daemon.alive(), "the daemon died on its own"
            daemon.kill()
            if kill in BROKER_DOWN_AT:
                broker.stop()
            if kill in restarts_when_down:
                broker.start()
            daemon.start()
        assert daemon.starts == KILLS + 1
        daemon.wait_for_log("replay_finished", timeout_s=60)
        collector.wait_for(lambda c: len(c.distinct_ids()) >= SCANS, 90, "every movement")
        wait_until(lambda: buffer_stats(config)["pending"] == 0, 30, "outbox drained")
        time.sleep(0.5)  # late duplicates still in flight must be checked too
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill()
        collector.stop()
        broker.stop()

    by_id: dict[str, bytes] = {}
    ids_by_serial: dict[str, set[str]] = {}
    bodies: dict[str, Any] = {}
    for message in collector.received():
        body = message.json()
        previous = by_id.setdefault(body["id"], message.payload)
        assert previous == message.payload, f"duplicate of {body['id']} with other content"
        bodies[body["id"]] = body
        ids_by_serial.setdefault(body["item"]["serial"], set()).add(body["id"])
    expected = _expected_items()
    assert set(ids_by_serial) == set(expected), "missing or extra items"
    doubled = {s: ids for s, ids in ids_by_serial.items() if len(ids) != 1}
    assert not doubled, f"items with more than one movement id: {list(doubled.items())[:5]}"
    for body in bodies.values():
        assert body["type"] == "receipt"
        assert body["item"]["gtin"] == expected[body["item"]["serial"]]
    seqs = sorted(body["seq"] for body in bodies.values())
    assert seqs == list(range(1, SCANS + 1)), "seq 1..N, no hole, no second seq for an item"
