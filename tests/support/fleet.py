"""A fleet of gateway daemons (real processes) on one mosquitto, drained by shared WMS consumers.

Each daemon has its own id, state folder and replay file of distinct scans; the consumers are
`WmsSink`s in one MQTT 5 shared-subscription group writing to ONE SQLite store (as a WMS would:
several consumers, one database), so "stored twice" is judged where a WMS would judge it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.wms_sink import WmsSink
from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, buffer_stats, write_config
from tests.support.scans import scan_events, write_jsonl

SITE = "fleet-site"
STATIONS = [{"id": "door-1", "kind": "receiving"}]


@dataclass(slots=True)
class FleetResult:
    """What a fleet run delivered, and how fast."""

    gateways: int
    scans_each: int
    consumers: int
    expected: int
    stored: int
    copies_received: int
    stored_twice: int
    seq_gaps: dict[str, int]
    pending_left: int
    drain_s: float
    movements_per_s: float
    broker_cpu_s: float
    broker_cpu_share: float
    per_consumer: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON-able data."""
        return {name: getattr(self, name) for name in self.__slots__}


async def run_fleet(
    workdir: Path,
    *,
    gateways: int,
    scans_each: int,
    consumers: int = 3,
    rate_per_s: float = 2_000,
    timeout_s: float = 600,
) -> FleetResult:
    """Start a mosquitto, `consumers` sinks and `gateways` daemons; wait until all is stored."""
    workdir.mkdir(parents=True, exist_ok=True)
    with Mosquitto(workdir / "mosquitto") as broker:
        configs = [
            _gateway_config(workdir / f"gw-{index:02d}", broker.port, scans_each, rate_per_s)
            for index in range(gateways)
        ]
        return await _drive(workdir, broker, configs, gateways, scans_each, consumers, timeout_s)


async def _drive(
    workdir: Path,
    broker: Mosquitto,
    configs: list[Path],
    gateways: int,
    scans_each: int,
    consumers: int,
    timeout_s: float,
) -> FleetResult:
    expected = gateways * scans_each
    db = workdir / "wms.sqlite3"
    sinks = [
        WmsSink("127.0.0.1", broker.port, db, group="wms", client_id=f"wms-{index}")
        for index in range(consumers)
    ]
    for sink in sinks:
        await sink.__aenter__()
    daemons = [DaemonProcess(config, config.parent / "daemon.log") for config in configs]
    try:
        for sink in sinks:
            await sink.wait_connected()
        assert broker.proc is not None
        cpu_before = _cpu_s(broker.proc.pid)
        started = time.monotonic()
        for daemon in daemons:
            daemon.start()
        deadline = started + timeout_s
        stored = 0
        while time.monotonic() < deadline:
            stored = await sinks[0].count()
            if stored >= expected:
                break
            dead = [d.config.parent.name for d in daemons if not d.alive()]
            if dead:
                raise AssertionError(f"daemons died: {dead}")
            await asyncio.sleep(0.25)
        drain_s = time.monotonic() - started
        cpu_s = _cpu_s(broker.proc.pid) - cpu_before
        # The WMS acks follow the commit: wait until every outbox is empty.
        pending_left = expected
        while time.monotonic() < deadline:
            stats = await asyncio.gather(*(asyncio.to_thread(buffer_stats, c) for c in configs))
            pending_left = sum(max(0, int(s["pending"])) for s in stats)
            if pending_left == 0:
                break
            await asyncio.sleep(0.5)
    finally:
        await asyncio.gather(*(asyncio.to_thread(_stop, d) for d in daemons))
        for sink in sinks:
            await sink.__aexit__(None, None, None)
    received = sum(sink.stats.received for sink in sinks)
    stored, stored_twice, gaps = _judge(db, gateways, scans_each)
    return FleetResult(
        gateways=gateways,
        scans_each=scans_each,
        consumers=consumers,
        expected=expected,
        stored=stored,
        copies_received=received,
        stored_twice=stored_twice,
        seq_gaps=gaps,
        pending_left=pending_left,
        drain_s=round(drain_s, 2),
        movements_per_s=round(stored / drain_s, 1),
        broker_cpu_s=round(cpu_s, 2),
        broker_cpu_share=round(cpu_s / drain_s, 3),
        per_consumer=[sink.stats.stored for sink in sinks],
    )


def _gateway_config(folder: Path, port: int, scans: int, rate_per_s: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    replay = write_jsonl(folder / "scans.jsonl", scan_events(scans))
    return write_config(
        folder / "gateway.toml",
        broker_port=port,
        state_dir=folder / "state",
        stations=STATIONS,
        readers=[
            {
                "kind": "replay",
                "id": "replay-1",
                "station": "door-1",
                "file": str(replay),
                "rate_per_s": rate_per_s,
            }
        ],
        # Every gateway offers all its movements at once, so the consumers' backlog, not a lost
        # message, decides when an ack comes: ack_timeout_s must outlast that backlog or every
        # late ack turns into a resend (a second copy). keepalive_s is the product default.
        mqtt={
            "delivery": "wms",
            "ack_timeout_s": 900.0,
            "status_interval_s": 30.0,
            "keepalive_s": 30,
        },
        gateway_id=folder.name,
        site=SITE,
    )


def _judge(db: Path, gateways: int, scans_each: int) -> tuple[int, int, dict[str, int]]:
    """Distinct ids stored, ids that reached the store more than once, missing seqs per gateway.

    The id is the store's primary key, so a second row cannot exist; a second copy shows in
    `copies`, which is what a WMS without that key would have stored twice.
    """
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, gateway, seq, copies FROM movements").fetchall()
    seqs: dict[str, set[int]] = defaultdict(set)
    twice = 0
    for _id, gateway, seq, copies in rows:
        seqs[gateway].add(seq)
        twice += copies > 1
    want = set(range(1, scans_each + 1))
    gaps = {f"gw-{i:02d}": len(want - seqs.get(f"gw-{i:02d}", set())) for i in range(gateways)}
    return len(rows), twice, gaps


def _stop(daemon: DaemonProcess) -> None:
    if daemon.alive():
        daemon.terminate(timeout_s=20)


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
