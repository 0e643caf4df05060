"""The demo's screen: a rich live view (or one plain line a second) and the keys b, r, q."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from gateway.daemon import Daemon
from gateway.demo.broker import Broker
from gateway.demo.script import LIGHT_PORTS, Show, drop_reader, toggle_broker
from gateway.readers.llrp.simulator import LlrpSimulator
from gateway.wms_sink import WmsSink

KEYS_HELP = "keys: [b] stop/start the broker  [r] drop the reader's connection  [q] finish"
# rich reads `[b]` as a bold tag and drops it: the hint is printed escaped, letters and all.
KEYS_HINT = escape(KEYS_HELP)


async def watch(
    daemon: Daemon,
    broker: Broker,
    simulator: LlrpSimulator,
    sink: WmsSink | None,
    show: Show,
    console: Console,
    *,
    duration_s: float | None,
    run: asyncio.Task[int],
    plain: bool,
) -> None:
    """Show the daemon until it ends, the user presses q, or `duration_s` has passed."""

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
            line = f"{one_line(daemon, broker)} | light {stack_light(simulator.record.gpo)}"
            if line != last:
                console.print(
                    f"[{time.monotonic() - show.started:5.0f}s] {line}",
                    highlight=False,
                    soft_wrap=True,
                )
                last = line
        return
    console.print(KEYS_HINT)
    with Live(console=console, refresh_per_second=4, screen=False) as live:
        while going():
            stored = await sink.count() if sink is not None else 0
            live.update(render(daemon, broker, simulator, show, stored))
            await asyncio.sleep(0.25)


def one_line(daemon: Daemon, broker: Broker) -> str:
    """The plain view: movements, buffer, broker link and readers on one line."""
    view = daemon.view()
    moves = ", ".join(f"{k} {v}" for k, v in sorted(view.movements_by_type.items())) or "none yet"
    readers = " ".join(f"{r['reader']}={r['state']}" for r in view.readers)
    link = "up" if view.forwarder.get("connected") else "down"
    return (
        f"movements: {moves} | pending {view.buffer.get('pending', 0)} | "
        f"published {view.forwarder.get('published', 0)} | broker {link}"
        f"{'' if broker.running else ' (stopped by the demo)'} | {readers}"
    )


def render(
    daemon: Daemon, broker: Broker, simulator: LlrpSimulator, show: Show, stored: int
) -> Group:
    """The live view: readers, flow, KPIs, and what the demo did under the key hints."""
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
    light = stack_light(simulator.record.gpo)
    flow.add_row("stack light at door-3 (portal GPOs)", f"[{_LIGHT_STYLE[light]}]{light}[/]")
    flow.add_row("scans sent by handhelds", str(show.scans_sent))
    kpi = Table(expand=True)
    kpi.add_column("KPI")
    kpi.add_column("", justify="right")
    for key, value in kpis(daemon.kpi_snapshot or {}).items():
        kpi.add_row(key, value)
    elapsed = time.monotonic() - show.started
    title = f"dock gateway demo - {elapsed:.0f}s - MQTT {broker.how} {broker.host}:{broker.port}"
    return Group(
        Panel(readers, title=escape(title)),
        Panel(flow, title="flow"),
        Panel(kpi, title="returns KPIs (edge)"),
        happenings(show),
    )


def stack_light(gpo: Mapping[int, bool]) -> str:
    """What the door's stack light shows, from the portal's GPO states: a verdict, or `off`."""
    lit = [verdict for verdict, port in LIGHT_PORTS.items() if gpo.get(port)]
    return lit[-1] if lit else "off"  # one at a time; the worst, should two be seen at once


_LIGHT_STYLE = {"expected": "green", "unexpected": "yellow", "problem": "red", "off": "dim"}


def happenings(show: Show) -> Panel:
    """What the demo did lately, titled with the key hints."""
    return Panel(escape("\n".join(show.events) or "-"), title=KEYS_HINT)


def kpis(snapshot: dict[str, object]) -> dict[str, str]:
    """The KPI rows the view shows, formatted, from the daemon's last KPI snapshot."""
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


async def keys(broker: Broker, simulator: LlrpSimulator, show: Show) -> None:
    """Single keys from a terminal: b, r, q (no-op when stdin is not a terminal)."""
    if not sys.stdin.isatty():
        return
    import termios  # noqa: PLC0415 - POSIX terminals only
    import tty  # noqa: PLC0415

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    pressed: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    tty.setcbreak(fd)
    loop.add_reader(fd, lambda: pressed.put_nowait(os.read(fd, 1).decode(errors="ignore")))
    try:
        while True:
            key = (await pressed.get()).lower()
            if key == "b":
                toggle_broker(broker, show)
            elif key == "r":
                await drop_reader(simulator, show)
            elif key == "q":
                show.finish.set()
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
