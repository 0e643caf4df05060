"""`gateway demo`: a returns dock on one machine, with nothing configured.

A simulated LLRP portal speaks real LLRP over TCP at the receiving door; scripted handhelds scan
over TCP at the door (RMA labels and untagged returns), the inspection bench (dispositions), the
restock station (locations) and the recycling bench; the real daemon buffers and publishes; the
reference WMS consumer stores and acknowledges (`delivery = "wms"`, the end-to-end guarantee).
Keys (or `--chaos`) stop the broker for a while and drop the reader's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
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
from gateway.domain.barcodes import gs1_check_digit
from gateway.domain.epc import decode_epc
from gateway.logs import configure_logging
from gateway.readers.llrp.scenario import Fault, Scenario, returns_door_scenario
from gateway.readers.llrp.simulator import LlrpSimulator
from gateway.wms_sink import WmsSink

STATIONS = [
    {"id": "door-3", "kind": "receiving"},
    {"id": "bench-1", "kind": "inspection"},
    {"id": "restock-1", "kind": "restock"},
    {"id": "recycle-1", "kind": "disposal"},
]
HANDHELDS = {
    "hh-door": "door-3",
    "hh-bench": "bench-1",
    "hh-restock": "restock-1",
    "hh-recycle": "recycle-1",
}
SCANS_PER_S = 4.0
# The demo's WMS announces most returns; one in ANNOUNCE_SKIP_EVERY arrives unannounced.
ANNOUNCE_SKIP_EVERY = 5
ANNOUNCED_SCRIPT_RMAS = 500
KEYS_HELP = "keys: [b] stop/start the broker  [r] drop the reader's connection  [q] finish"


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

    @property
    def running(self) -> bool:
        """Whether the private broker runs (always True for a broker we did not start)."""
        return self.how != "private" or (self.process is not None and self.process.poll() is None)


@dataclass(slots=True)
class Show:
    """What the demo itself did, for the view and the summary."""

    started: float = field(default_factory=time.monotonic)
    scans_sent: int = 0
    reader_drops: int = 0
    events: list[str] = field(default_factory=list)
    finish: asyncio.Event = field(default_factory=asyncio.Event)

    def say(self, text: str) -> None:
        """Remember something that happened, for the view."""
        self.events = [*self.events[-5:], f"{time.monotonic() - self.started:5.0f}s  {text}"]


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
        console.print(f"state and logs: {work}")
        return asyncio.run(
            _demo(work, broker, console, duration_s=duration_s, chaos=chaos, plain=plain)
        )


async def _demo(
    work: Path,
    broker: Broker,
    console: Console,
    *,
    duration_s: float | None,
    chaos: bool,
    plain: bool,
) -> int:
    show = Show()
    scenario = _scenario(duration_s)
    async with LlrpSimulator(scenario, port=0) as simulator, contextlib.AsyncExitStack() as stack:
        scanner_port = _free_port()
        config = _demo_config(work, broker, simulator.port, scanner_port)
        sink: WmsSink | None = None
        if not broker.offline:
            sink = await stack.enter_async_context(
                WmsSink(broker.host, broker.port, work / "wms.sqlite3", group=f"demo-{os.getpid()}")
            )
        daemon = Daemon(config, install_signals=True)
        run_task = asyncio.create_task(daemon.run(), name="daemon")
        helpers = [
            asyncio.create_task(_announce(daemon, sink, scenario, show), name="announce"),
            asyncio.create_task(_handhelds(scanner_port, show), name="handhelds"),
            asyncio.create_task(_keys(broker, simulator, show), name="keys"),
        ]
        if chaos:
            helpers.append(asyncio.create_task(_chaos(broker, simulator, show, duration_s or 90.0)))
        try:
            await _watch(
                daemon, broker, simulator, sink, show, console, duration_s, run_task, plain
            )
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            _ensure_broker(broker)
            show.say("inputs stopped; draining the buffer to the WMS")
            drained = await _drain(daemon, sink, broker, run_task, timeout_s=90.0)
        finally:
            daemon.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await run_task
        stored = await sink.count() if sink is not None else 0
    return _summary(console, daemon, broker, show, stored=stored, drained=drained)


def _scenario(duration_s: float | None) -> Scenario:
    """A receiving door for the demo's length: pallets of returns, strays, one in and out."""
    length_s = max(30.0, duration_s or 600.0)
    pallets = max(3, int(length_s / 8))
    return returns_door_scenario(
        items=pallets * 12,
        pallets=pallets,
        strays=8,
        in_and_out=max(1, pallets // 6),
        duration_s=length_s + 5.0,
        seed=int(time.time()),
    )


async def _watch(
    daemon: Daemon,
    broker: Broker,
    simulator: LlrpSimulator,
    sink: WmsSink | None,
    show: Show,
    console: Console,
    duration_s: float | None,
    run: asyncio.Task[int],
    plain: bool,
) -> None:
    def going() -> bool:
        elapsed = time.monotonic() - show.started
        return (
            not run.done()
            and not show.finish.is_set()
            and (duration_s is None or elapsed < duration_s)
        )

    if plain or not console.is_terminal:
        last = ""
        while going():
            await asyncio.sleep(1.0)
            line = _one_line(daemon, broker)
            if line != last:
                console.print(
                    f"[{time.monotonic() - show.started:5.0f}s] {line}",
                    highlight=False,
                    soft_wrap=True,
                )
                last = line
        return
    console.print(KEYS_HELP)
    with Live(console=console, refresh_per_second=4, screen=False) as live:
        while going():
            stored = await sink.count() if sink is not None else 0
            live.update(_render(daemon, broker, simulator, show, stored))
            await asyncio.sleep(0.25)


def _one_line(daemon: Daemon, broker: Broker) -> str:
    view = daemon.view()
    moves = ", ".join(f"{k} {v}" for k, v in sorted(view.movements_by_type.items())) or "none yet"
    readers = " ".join(f"{r['reader']}={r['state']}" for r in view.readers)
    link = "up" if view.forwarder.get("connected") else "down"
    return (
        f"movements: {moves} | pending {view.buffer.get('pending', 0)} | "
        f"published {view.forwarder.get('published', 0)} | broker {link}"
        f"{'' if broker.running else ' (stopped by the demo)'} | {readers}"
    )


def _render(
    daemon: Daemon, broker: Broker, simulator: LlrpSimulator, show: Show, stored: int
) -> Group:
    view = daemon.view()
    readers = Table(expand=True)
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
    flow = Table(expand=True)
    flow.add_column("flow")
    flow.add_column("", justify="right")
    for kind, count in sorted(view.movements_by_type.items()):
        flow.add_row(f"movements: {kind}", str(count))
    age = view.buffer.get("oldest_pending_age_s")
    link = view.forwarder.get("connected")
    flow.add_row("buffer depth (unacknowledged)", str(view.buffer.get("pending", 0)))
    flow.add_row("oldest unacked age", "-" if age is None else f"{age:.1f} s")
    flow.add_row("published (incl. resends)", str(view.forwarder.get("published", 0)))
    flow.add_row("stored and acked by the WMS", str(stored))
    flow.add_row("broker", "[green]up[/]" if link else "[red]DOWN[/]")
    flow.add_row("tag reads sent by the portal", str(simulator.record.tag_reads_sent))
    flow.add_row("scans sent by handhelds", str(show.scans_sent))
    kpi = Table(expand=True)
    kpi.add_column("KPI")
    kpi.add_column("", justify="right")
    for key, value in _kpis(daemon).items():
        kpi.add_row(key, value)
    elapsed = time.monotonic() - show.started
    title = f"dock gateway demo - {elapsed:.0f}s - MQTT {broker.how} {broker.host}:{broker.port}"
    happenings = "\n".join(show.events) or "-"
    return Group(
        Panel(readers, title=title),
        Panel(flow, title="flow"),
        Panel(kpi, title="returns KPIs (edge)"),
        Panel(happenings, title=KEYS_HELP),
    )


def _kpis(daemon: Daemon) -> dict[str, str]:
    snapshot = daemon.kpi_snapshot or {}
    out: dict[str, str] = {}
    rate = snapshot.get("recovery_rate")
    out["recovery rate (restocked or repaired / received)"] = (
        "-" if not isinstance(rate, int | float) else f"{rate:.0%}"
    )
    share = snapshot.get("unexpected_share")
    out["unexpected returns"] = "-" if not isinstance(share, int | float) else f"{share:.0%}"
    latency = snapshot.get("read_to_publish_latency_s")
    if isinstance(latency, dict) and latency.get("p90") is not None:
        out["read-to-publish p90"] = f"{latency['p90'] * 1000:.0f} ms"
    dispositions = snapshot.get("dispositions")
    if isinstance(dispositions, dict) and dispositions:
        out["dispositions"] = ", ".join(f"{k} {v}" for k, v in sorted(dispositions.items()))
    return out


def expected_returns(scenario: Scenario) -> list[dict[str, Any]]:
    """What the demo's WMS announces: most tagged and scanned returns, not all of them."""
    tags = [tag for tag in scenario.tags if tag.role == "item"]
    rfid = [tag.epc_hex for index, tag in enumerate(tags, 1) if index % ANNOUNCE_SKIP_EVERY != 0]
    rmas = [
        {"rma": f"RMA-T{start // 4 + 1:05d}", "items": [{"epc": decode_epc(h).uri} for h in chunk]}
        for start in range(0, len(rfid), 4)
        if (chunk := rfid[start : start + 4])
    ]
    for rma in range(1, ANNOUNCED_SCRIPT_RMAS + 1):
        if rma % ANNOUNCE_SKIP_EVERY == 0:
            continue
        items = [
            {"gtin": gtin, "serial": serial}
            for gtin, serial in (_script_item(n) for n in range(3 * rma - 2, 3 * rma + 1))
        ]
        rmas.append({"rma": f"RMA-{rma:06d}", "items": items})
    return rmas


async def _announce(daemon: Daemon, sink: WmsSink | None, scenario: Scenario, show: Show) -> None:
    """Announce expected returns as a WMS would: over MQTT when there is a broker."""
    command = {"action": "add", "rmas": expected_returns(scenario)}
    for _ in range(20):
        await asyncio.sleep(0.5)
        if sink is None:
            if daemon.expected is None:
                continue
            result = await daemon.expected.announce(command)
        else:
            try:
                result = await sink.announce(
                    daemon.config.gateway.site, daemon.config.gateway.id, command, timeout_s=3.0
                )
            except TimeoutError:
                continue  # the daemon is not subscribed yet; an add sent twice is the same add
        show.say(f"WMS announced {result.get('accepted', 0)} expected returns (most, not all)")
        return


async def _handhelds(port: int, show: Show) -> None:
    """Four handhelds: RMAs and untagged items at the door, then bench, restock and recycling."""
    await asyncio.sleep(1.0)
    writers: dict[str, asyncio.StreamWriter] = {}
    try:
        for device in HANDHELDS:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"device:{device}\r\n".encode())
            writers[device] = writer
        for device, data in _scan_script():
            writers[device].write(f"{data}\r\n".encode())
            await writers[device].drain()
            show.scans_sent += 1
            await asyncio.sleep(1 / SCANS_PER_S)
    finally:
        for writer in writers.values():
            writer.close()


def _scan_script() -> Iterator[tuple[str, str]]:
    n = 0
    for rma in range(1, 10_000):
        yield "hh-door", f"RMA-{rma:06d}"
        items = []
        for _ in range(3):
            n += 1
            gtin, serial = _script_item(n)
            items.append(f"]C101{gtin}21{serial}")
            yield "hh-door", items[-1]
        yield "hh-door", "RMA-CLOSE"
        disposition = ["RESTOCK", "REPAIR", "RECYCLE", "RESTOCK", "DISPOSE"][rma % 5]
        yield "hh-bench", f"DISP-{disposition}"
        for item in items:
            yield "hh-bench", item
        if disposition in ("RESTOCK", "REPAIR"):
            yield "hh-restock", f"LOC-A-{rma % 7:02d}-{rma % 3}"
            for item in items:
                yield "hh-restock", item
        else:
            for item in items:
                yield "hh-recycle", item


def _script_item(n: int) -> tuple[str, str]:
    """GTIN and serial of the n-th item the door's handheld scans."""
    body = "0" + f"614141{n % 1000:06d}"[:12]
    return f"{body}{gs1_check_digit(body)}", f"{n:06d}"


async def _keys(broker: Broker, simulator: LlrpSimulator, show: Show) -> None:
    """Single keys from a terminal: b, r, q (no-op when stdin is not a terminal)."""
    if not sys.stdin.isatty():
        return
    import termios  # noqa: PLC0415 - POSIX terminals only
    import tty  # noqa: PLC0415

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    keys: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    tty.setcbreak(fd)
    loop.add_reader(fd, lambda: keys.put_nowait(os.read(fd, 1).decode(errors="ignore")))
    try:
        while True:
            key = (await keys.get()).lower()
            if key == "b":
                _toggle_broker(broker, show)
            elif key == "r":
                await _drop_reader(simulator, show)
            elif key == "q":
                show.finish.set()
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _chaos(broker: Broker, simulator: LlrpSimulator, show: Show, duration_s: float) -> None:
    """Stop the broker for a while at a third of the run; drop the reader at two thirds."""
    await asyncio.sleep(duration_s / 3)
    _toggle_broker(broker, show)
    await asyncio.sleep(min(12.0, duration_s / 5))
    _toggle_broker(broker, show)
    await asyncio.sleep(max(1.0, duration_s * 2 / 3 - duration_s / 3 - min(12.0, duration_s / 5)))
    await _drop_reader(simulator, show)


def _toggle_broker(broker: Broker, show: Show) -> None:
    if broker.how != "private":
        show.say("the demo only stops a broker it started itself (use --chaos without a broker)")
        return
    if broker.running:
        _stop_private_broker(broker, keep_record=True)
        show.say("broker STOPPED: movements pile up in the SQLite outbox")
    else:
        _ensure_broker(broker)
        show.say("broker started again: the backlog drains, in order, same ids")


async def _drop_reader(simulator: LlrpSimulator, show: Show) -> None:
    hit = await simulator.inject(Fault(0.0, "drop"))
    show.reader_drops += 1
    show.say(f"reader connection dropped ({hit} open); the supervisor reconnects with backoff")


async def _drain(
    daemon: Daemon, sink: WmsSink | None, broker: Broker, run: asyncio.Task[int], timeout_s: float
) -> bool:
    """Stop the inputs, let every movement out, wait until the WMS has acknowledged all."""
    if run.done():
        return False
    await daemon.stop_inputs()
    if broker.offline or sink is None:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not run.done():
        stats = await daemon.refresh_stats()
        if stats is not None and stats.pending == 0:
            return True
        await asyncio.sleep(0.5)
    return False


def _summary(
    console: Console, daemon: Daemon, broker: Broker, show: Show, *, stored: int, drained: bool
) -> int:
    view = daemon.view()
    made = int(view.buffer.get("last_seq", 0) or 0)
    acknowledged = int(view.buffer.get("delivered_total", 0) or 0)
    pending = int(view.buffer.get("pending", 0) or 0)
    lost = made - acknowledged - pending
    summary = {
        "reads_and_scans": view.counters.get("raw_events_journaled", 0),
        "items_received": view.movements_by_type.get("receipt", 0),
        "movements_made": made,
        "movements_by_type": view.movements_by_type,
        "published": view.forwarder.get("published", 0),
        "acknowledged": acknowledged,
        "stored_by_wms": stored,
        "still_buffered": pending,
        "lost": lost,
        "broker": broker.how,
        "broker_stops": len(broker.stops),
        "reader_drops": show.reader_drops,
    }
    console.print_json(json.dumps(summary))
    if broker.offline:
        console.print("offline: every movement is kept in the buffer until a broker answers")
        return 0 if lost == 0 else 1
    complete = drained and lost == 0 and stored == made
    return 0 if complete else 1


def _demo_config(work: Path, broker: Broker, llrp_port: int, scanner_port: int) -> Config:
    raw: dict[str, Any] = {
        "gateway": {"id": "dock-demo", "site": "demo-site", "state_dir": str(work / "state")},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "delivery": "wms",
            "ack_timeout_s": 10.0,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 2.0,
            "status_interval_s": 2.0,
            "kpi_interval_s": 2.0,
            "keepalive_s": 5,
        },
        "health": {"enabled": False},
        "stations": [
            {**STATIONS[0], "absent_s": 2.0},
            *STATIONS[1:],
        ],
        "readers": [
            {
                "kind": "llrp",
                "id": "door-3-portal",
                "host": "127.0.0.1",
                "port": llrp_port,
                "station": "door-3",
                "profile": "generic-llrp-portal",
                "zones": {"outside": [1, 2], "inside": [3, 4]},
            },
            {
                "kind": "tcp-scanner",
                "id": "handhelds",
                "listen": f"127.0.0.1:{scanner_port}",
                "station": "door-3",
                "device_stations": HANDHELDS,
            },
        ],
    }
    return parse_config(raw)


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
    if broker.how == "private" and not broker.running:
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


def _broker_sentence(broker: Broker) -> str:
    return {
        "given": f"MQTT: using the broker you named, {broker.host}:{broker.port}",
        "localhost": f"MQTT: a broker answers on {broker.host}:{broker.port}; using it",
        "private": "MQTT: started a private mosquitto on port "
        f"{broker.port} (the demo may stop and start it)",
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
