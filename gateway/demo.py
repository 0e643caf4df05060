"""`gateway demo`: the real daemon on one machine: scripted input, a live view, a summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from gateway.app import Daemon
from gateway.config import Config, parse_config
from gateway.logs import configure_logging

STATIONS = [
    {"id": "door-3", "kind": "receiving"},
    {"id": "bench-1", "kind": "inspection"},
    {"id": "restock-1", "kind": "restock"},
    {"id": "recycle-1", "kind": "disposal"},
]


@dataclass(slots=True)
class Broker:
    """Where the demo's MQTT goes, and the private mosquitto if the demo started one."""

    host: str
    port: int
    how: str
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    stops: list[float] = field(default_factory=list)

    @property
    def offline(self) -> bool:
        """True when no broker could be had: the gateway buffers only."""
        return self.how == "offline"


def run_demo(
    *,
    mqtt_host: str | None,
    mqtt_port: int | None,
    state_dir: Path | None,
    duration_s: float | None,
    chaos: bool,
    plain: bool,
) -> int:
    """Run the demo; return 0 when nothing was lost."""
    console = Console()
    with contextlib.ExitStack() as stack:
        work = state_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="dock-demo-"))
        )
        work.mkdir(parents=True, exist_ok=True)
        broker = _choose_broker(mqtt_host, mqtt_port, work, private_first=chaos)
        stack.callback(_stop_private_broker, broker)
        console.print(_broker_sentence(broker))
        log_file = stack.enter_context((work / "gateway.log").open("a", encoding="utf-8"))
        configure_logging("json", "INFO", stream=log_file)
        console.print(f"logs: {work / 'gateway.log'}")
        config = _demo_config(work, broker)
        return asyncio.run(
            _demo(config, broker, console, duration_s=duration_s, chaos=chaos, plain=plain)
        )


async def _demo(
    config: Config,
    broker: Broker,
    console: Console,
    *,
    duration_s: float | None,
    chaos: bool,
    plain: bool,
) -> int:
    daemon = Daemon(config, install_signals=True)
    started = time.monotonic()
    run_task = asyncio.create_task(daemon.run(), name="daemon")
    chaos_task = (
        asyncio.create_task(_chaos(broker, duration_s or 90.0), name="chaos")
        if chaos and broker.process is not None
        else None
    )
    try:
        if plain or not console.is_terminal:
            await _plain_view(daemon, console, duration_s, started, run_task)
        else:
            await _live_view(daemon, broker, duration_s, started, run_task)
        if chaos_task is not None:
            chaos_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chaos_task
            _ensure_broker(broker)
        drained = await _drain(daemon, broker, timeout_s=60.0)
    finally:
        daemon.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await run_task
    return _summary(console, daemon, broker, drained=drained)


async def _plain_view(
    daemon: Daemon,
    console: Console,
    duration_s: float | None,
    started: float,
    run: asyncio.Task[int],
) -> None:
    last_line = ""
    while not run.done() and (duration_s is None or time.monotonic() - started < duration_s):
        await asyncio.sleep(1.0)
        line = _one_line(daemon)
        if line != last_line:
            console.print(
                f"[{time.monotonic() - started:5.0f}s] {line}", highlight=False, soft_wrap=True
            )
            last_line = line


async def _live_view(
    daemon: Daemon, broker: Broker, duration_s: float | None, started: float, run: asyncio.Task[int]
) -> None:
    with Live(_render(daemon, broker, started), refresh_per_second=4, screen=False) as live:
        while not run.done() and (duration_s is None or time.monotonic() - started < duration_s):
            await asyncio.sleep(0.25)
            live.update(_render(daemon, broker, started))


def _one_line(daemon: Daemon) -> str:
    view = daemon.view()
    moves = ", ".join(f"{k} {v}" for k, v in sorted(view.movements_by_type.items())) or "none yet"
    readers = " ".join(f"{r['reader']}={r['state']}" for r in view.readers)
    broker = "up" if view.forwarder.get("connected") else "down"
    return (
        f"movements: {moves} | pending {view.buffer.get('pending', 0)} | "
        f"published {view.forwarder.get('published', 0)} | broker {broker} | {readers}"
    )


def _render(daemon: Daemon, broker: Broker, started: float) -> Group:
    view = daemon.view()
    readers = Table(title="readers", expand=True)
    for column in ("reader", "kind", "state", "events", "bad input", "reconnects"):
        readers.add_column(column)
    for r in view.readers:
        readers.add_row(
            r["reader"],
            r["kind"],
            r["state"],
            str(r["events"]),
            str(r["bad_input"]),
            str(r["reconnects"]),
        )
    flow = Table(title="flow", expand=True)
    flow.add_column("what")
    flow.add_column("value", justify="right")
    for kind, count in sorted(view.movements_by_type.items()):
        flow.add_row(f"movements: {kind}", str(count))
    flow.add_row("buffer depth (undelivered)", str(view.buffer.get("pending", 0)))
    age = view.buffer.get("oldest_pending_age_s")
    flow.add_row("oldest unacked age", "-" if age is None else f"{age:.1f} s")
    flow.add_row("published", str(view.forwarder.get("published", 0)))
    flow.add_row("delivered", str(view.buffer.get("delivered_total", 0)))
    flow.add_row("broker", "up" if view.forwarder.get("connected") else "DOWN")
    elapsed = time.monotonic() - started
    title = f"dock gateway demo - {elapsed:.0f}s - broker {broker.how} {broker.host}:{broker.port}"
    return Group(Panel(readers, title=title), flow)


async def _chaos(broker: Broker, duration_s: float) -> None:
    """Stop the private broker for a while at a third of the run, to show backlog and drain."""
    await asyncio.sleep(duration_s / 3)
    _stop_private_broker(broker, keep_record=True)
    await asyncio.sleep(min(12.0, duration_s / 5))
    _ensure_broker(broker)


async def _drain(daemon: Daemon, broker: Broker, timeout_s: float) -> bool:
    """Stop the inputs, let every movement out, and wait until nothing is left to deliver."""
    await daemon.stop_inputs()
    if broker.offline:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = await daemon.refresh_stats()
        if stats is not None and stats.pending == 0:
            return True
        await asyncio.sleep(0.5)
    return False


def _summary(console: Console, daemon: Daemon, broker: Broker, *, drained: bool) -> int:
    view = daemon.view()
    made = int(view.buffer.get("last_seq", 0) or 0)
    delivered = int(view.buffer.get("delivered_total", 0) or 0)
    pending = int(view.buffer.get("pending", 0) or 0)
    lost = made - delivered - pending
    summary = {
        "reads_and_scans": view.counters.get("raw_events_journaled", 0),
        "items_received": view.movements_by_type.get("receipt", 0),
        "movements_made": made,
        "movements_by_type": view.movements_by_type,
        "published": view.forwarder.get("published", 0),
        "acknowledged": delivered,
        "still_buffered": pending,
        "lost": lost,
        "broker": broker.how,
        "broker_stops": len(broker.stops),
    }
    console.print_json(json.dumps(summary))
    if broker.offline:
        console.print("offline: every movement is kept in the buffer until a broker answers")
    return 0 if lost == 0 and (drained or broker.offline) else 1


def _demo_config(work: Path, broker: Broker) -> Config:
    events = work / "demo-input.jsonl"
    _write_script(events)
    raw: dict[str, Any] = {
        "gateway": {"id": "dock-demo", "site": "demo-site", "state_dir": str(work / "state")},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 2.0,
            "status_interval_s": 2.0,
        },
        "health": {"enabled": False},
        "stations": STATIONS,
        "readers": [
            {
                "kind": "replay",
                "id": "scripted-input",
                "station": "door-3",
                "file": str(events),
                "rate_per_s": 25.0,
            },
        ],
    }
    return parse_config(raw)


def _write_script(path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for line in _script():
            out.write(json.dumps(line) + "\n")


def _script() -> Iterator[dict[str, Any]]:
    """A returns day in miniature: RMAs and items at the door, dispositions, restock, disposal."""
    from gateway.domain.barcodes import gs1_check_digit  # noqa: PLC0415

    def item(n: int) -> str:
        body = "0" + f"614141{n % 1000:06d}"[:12]
        return f"]C101{body}{gs1_check_digit(body)}21{n:06d}"

    n = 0
    for rma in range(1, 41):
        yield {"kind": "barcode", "data": f"RMA-{rma:06d}", "station": "door-3"}
        for _ in range(5):
            n += 1
            yield {"kind": "barcode", "data": item(n), "station": "door-3"}
        yield {"kind": "barcode", "data": "RMA-CLOSE", "station": "door-3"}
        disposition = ["RESTOCK", "REPAIR", "RECYCLE", "DISPOSE", "RESTOCK"][rma % 5]
        yield {"kind": "barcode", "data": f"DISP-{disposition}", "station": "bench-1"}
        for k in range(n - 4, n + 1):
            yield {"kind": "barcode", "data": item(k), "station": "bench-1"}
        if disposition in ("RESTOCK", "REPAIR"):
            yield {"kind": "barcode", "data": f"LOC-A-{rma % 7:02d}", "station": "restock-1"}
            for k in range(n - 4, n + 1):
                yield {"kind": "barcode", "data": item(k), "station": "restock-1"}
        else:
            for k in range(n - 4, n + 1):
                yield {"kind": "barcode", "data": item(k), "station": "recycle-1"}


def _choose_broker(
    host: str | None, port: int | None, work: Path, *, private_first: bool
) -> Broker:
    """The broker named, else localhost:1883, else a private mosquitto, else none (offline).

    With `private_first` (chaos), a private mosquitto is preferred: the demo must be able to
    stop and start the broker it uses, and it never stops one it did not start.
    """
    if host is not None:
        return Broker(host=host, port=port or 1883, how="given")
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if (binary is None or not private_first) and _answers("127.0.0.1", port or 1883):
        return Broker(host="127.0.0.1", port=port or 1883, how="localhost")
    if binary is None:
        return Broker(host="127.0.0.1", port=_free_port(), how="offline")
    broker = Broker(host="127.0.0.1", port=_free_port(), how="private", workdir=work / "mosquitto")
    _start_private_broker(broker, binary)
    return broker


def _start_private_broker(broker: Broker, binary: str | None = None) -> None:
    assert broker.workdir is not None
    binary = binary or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker.workdir.mkdir(parents=True, exist_ok=True)
    broker.workdir.chmod(0o777)
    conf = broker.workdir / "mosquitto.conf"
    lines = [
        f"listener {broker.port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {broker.workdir}/",
        "max_queued_messages 0",
        f"log_dest file {broker.workdir}/mosquitto.log",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    broker.process = subprocess.Popen(  # noqa: S603 - the mosquitto binary found on PATH
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _answers(broker.host, broker.port):
        time.sleep(0.05)


def _ensure_broker(broker: Broker) -> None:
    if broker.how == "private" and (broker.process is None or broker.process.poll() is not None):
        _start_private_broker(broker)


def _stop_private_broker(broker: Broker, keep_record: bool = False) -> None:
    if broker.process is not None and broker.process.poll() is None:
        broker.process.terminate()
        try:
            broker.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            broker.process.kill()
            broker.process.wait(timeout=10)
        if keep_record:
            broker.stops.append(time.time())
    broker.process = None if not keep_record else broker.process


def _broker_sentence(broker: Broker) -> str:
    return {
        "given": f"MQTT: using the broker you named, {broker.host}:{broker.port}",
        "localhost": f"MQTT: a broker answers on {broker.host}:{broker.port}; using it",
        "private": "MQTT: no broker on localhost:1883; started a private mosquitto on port "
        f"{broker.port}",
        "offline": "MQTT: no broker on localhost:1883 and no mosquitto installed: running OFFLINE, "
        "buffering every movement in SQLite (install mosquitto to see them delivered)",
    }[broker.how]


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
