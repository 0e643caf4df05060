"""The demo's WMS announcing expected returns: most tagged and scanned returns, not all of them."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.daemon import Daemon
from gateway.demo.script import Show, script_item
from gateway.domain.epc import decode_epc
from gateway.errors import InputError
from gateway.readers.llrp.scenario import Scenario
from gateway.wms_sink import WmsSink

# One return in ANNOUNCE_SKIP_EVERY arrives unannounced, so the KPIs show both kinds.
ANNOUNCE_SKIP_EVERY = 5
ANNOUNCED_SCRIPT_RMAS = 500
TAGS_PER_RMA = 4
ATTEMPTS = 20


def expected_returns(scenario: Scenario) -> list[dict[str, Any]]:
    """RMAs of the portal's tagged items and of the door handheld's scans, most of them."""
    tags = [tag for tag in scenario.tags if tag.role == "pallet"]  # returns crossing the door
    rfid = [tag.epc_hex for i, tag in enumerate(tags, 1) if i % ANNOUNCE_SKIP_EVERY != 0]
    rmas = [
        {
            "rma": f"RMA-T{start // TAGS_PER_RMA + 1:05d}",
            "items": [{"epc": decode_epc(epc_hex).uri} for epc_hex in chunk],
        }
        for start in range(0, len(rfid), TAGS_PER_RMA)
        if (chunk := rfid[start : start + TAGS_PER_RMA])
    ]
    for rma in range(1, ANNOUNCED_SCRIPT_RMAS + 1):
        if rma % ANNOUNCE_SKIP_EVERY == 0:
            continue
        items = [script_item(n) for n in range(3 * rma - 2, 3 * rma + 1)]
        rmas.append(
            {"rma": f"RMA-{rma:06d}", "items": [{"gtin": g, "serial": s} for g, s in items]}
        )
    return rmas


async def announce(daemon: Daemon, sink: WmsSink | None, scenario: Scenario, show: Show) -> None:
    """Announce as a WMS would: over MQTT when there is a broker, else straight to the daemon."""
    command = {"action": "add", "rmas": expected_returns(scenario)}
    site, gateway = daemon.config.gateway.site, daemon.config.gateway.id
    for _ in range(ATTEMPTS):
        await asyncio.sleep(0.5)
        try:
            if sink is None:
                result = await daemon.announce_expected(command)
            else:
                result = await sink.announce(site, gateway, command, timeout_s=3.0)
        except (TimeoutError, InputError):
            continue  # not running or not subscribed yet; an add sent twice is the same add
        show.say(f"WMS announced {result.get('accepted', 0)} expected returns (most, not all)")
        return
