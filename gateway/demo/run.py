"""The demo's run: a private world (portal, handhelds, broker, WMS), the daemon, then a summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from gateway.config import Config, parse_config
from gateway.daemon import Daemon
from gateway.demo.announce import announce
from gateway.demo.broker import Broker, choose_broker
from gateway.demo.screen import keys, watch
from gateway.demo.script import (
    HANDHELDS,
    LIGHT_HOLD_S,
    LIGHT_PORTS,
    MQTT_HANDHELD,
    STATIONS,
    MqttHandheld,
    Show,
    chaos,
    handhelds,
)
from gateway.logs import configure_logging
from gateway.readers.llrp.scenario import Scenario, returns_door_scenario
from gateway.readers.llrp.simulator import LlrpSimulator
from gateway.runtime.loopback import free_port
from gateway.wms_sink import WmsSink

DRAIN_TIMEOUT_S = 90.0
CHAOS_DEFAULT_S = 90.0
STRAYS = 8
STRAY_ANTENNA = 4
# A tag in view this long without crossing is parked; the demo says so after a minute, not two.
PARKED_AFTER_S = 60.0


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
        broker = choose_broker(mqtt_host, mqtt_port, work, private_first=chaos)
        stack.callback(broker.stop)
        console.print(broker.sentence())
        log_file = stack.enter_context((work / "gateway.log").open("a", encoding="utf-8"))
        configure_logging("json", "INFO", stream=log_file)
        console.print(f"state and logs: {work}")
        return asyncio.run(
            _demo(work, broker, console, duration_s=duration_s, with_chaos=chaos, plain=plain)
        )


def demo_scenario(duration_s: float | None) -> Scenario:
    """The door for the demo's length: pallets crossing in, a stray field, one in and out."""
    length_s = max(30.0, duration_s or 600.0)
    pallets = max(3, int(length_s / 8))
    return returns_door_scenario(
        items=pallets * 12,
        pallets=pallets,
        strays=STRAYS,
        in_and_out=max(1, pallets // 6),
        duration_s=length_s + 5.0,
        seed=int(time.time()),
        # Returns parked beside the door, weakly read by the inside antenna nearest them for the
        # whole run: what the tuning page lists as parked and proposes to cut out.
        stray_antennas=(STRAY_ANTENNA,),
    )


async def _demo(
    work: Path,
    broker: Broker,
    console: Console,
    *,
    duration_s: float | None,
    with_chaos: bool,
    plain: bool,
) -> int:
    show = Show()
    scenario = demo_scenario(duration_s)
    async with LlrpSimulator(scenario, port=0) as simulator, contextlib.AsyncExitStack() as stack:
        scanner_port = free_port()
        console_port = free_port()
        config = _demo_config(work, broker, simulator.port, scanner_port, console_port)
        console.print(f"technicians' console: http://127.0.0.1:{console_port}/", highlight=False)
        sink: WmsSink | None = None
        if not broker.offline:
            sink = await stack.enter_async_context(
                WmsSink(broker.host, broker.port, work / "wms.sqlite3", group=f"demo-{os.getpid()}")
            )
        daemon = Daemon(config, install_signals=True)
        mqtt = None
        if not broker.offline:
            topic = f"{daemon.config.mqtt.topic_prefix}/{config.gateway.site}/{config.gateway.id}"
            mqtt = MqttHandheld(broker, f"{topic}/scans/{MQTT_HANDHELD}")
        run_task = asyncio.create_task(daemon.run(), name="daemon")
        helpers = [
            asyncio.create_task(announce(daemon, sink, scenario, show), name="announce"),
            asyncio.create_task(handhelds(scanner_port, show, mqtt), name="handhelds"),
            asyncio.create_task(keys(broker, simulator, show), name="keys"),
        ]
        if with_chaos:
            length_s = duration_s or CHAOS_DEFAULT_S
            helpers.append(
                asyncio.create_task(chaos(broker, simulator, show, length_s), name="chaos")
            )
        try:
            await watch(
                daemon,
                broker,
                simulator,
                sink,
                show,
                console,
                duration_s=duration_s,
                run=run_task,
                plain=plain,
            )
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            broker.ensure_running()
            show.say("inputs stopped; draining the buffer to the WMS")
            drained = await _drain(daemon, sink, broker, run_task, timeout_s=DRAIN_TIMEOUT_S)
        finally:
            daemon.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await run_task
        stored = await sink.count() if sink is not None else 0
    return _summary(console, daemon, broker, show, stored=stored, drained=drained)


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


def _demo_config(
    work: Path, broker: Broker, llrp_port: int, scanner_port: int, console_port: int
) -> Config:
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
        # The health port serves the technicians' console too, on loopback only.
        "health": {"enabled": True, "listen": f"127.0.0.1:{console_port}"},
        "console": {"parked_after_s": PARKED_AFTER_S},
        "stations": [
            {
                **STATIONS[0],
                "absent_s": 2.0,
                # The stack light on the portal's GPOs: the simulator records what it is told.
                "lights": {"reader": "door-3-portal", "hold_s": LIGHT_HOLD_S, **LIGHT_PORTS},
            },
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
            # The recycling handheld publishes over MQTT while a broker answers.
            {
                "kind": "mqtt-scanner",
                "id": "handhelds-mqtt",
                "device_stations": {MQTT_HANDHELD: HANDHELDS[MQTT_HANDHELD]},
            },
        ],
    }
    return parse_config(raw)
