"""The WMS contract end to end: expected returns, EPCIS output, shared consumers, replay, KPIs."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.wms_sink import WmsSink
from tests.support.broker import Mosquitto
from tests.support.daemon import ROOT, DaemonProcess, buffer_stats, wait_until, write_config
from tests.support.scans import gtin14, item_scan, scan_events, write_jsonl
from tests.support.wms import Collector, retained

pytestmark = pytest.mark.slow

SITE = "milan-returns"
GATEWAY = "dock-3"
BASE = f"returns/{SITE}/{GATEWAY}"
STATIONS = [
    {"id": "door-3", "kind": "receiving"},
    {"id": "bench-1", "kind": "inspection"},
    {"id": "rack-1", "kind": "restock"},
    {"id": "bin-1", "kind": "disposal"},
]
# Events are spaced wider than any station's rescan window, so a repeat is a second visit.
STEP_S = 10.0


def _gtin_serial(index: int) -> tuple[str, str]:
    """The GTIN and serial that `item_scan(index)` encodes."""
    return gtin14("0614141" + str(10000 + index % 90000)[:5]), f"{index:08d}"


def _at(offset_s: float, epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s + offset_s, UTC).isoformat().replace("+00:00", "Z")


def _script(steps: list[tuple[str, str]], epoch_s: float) -> list[dict[str, Any]]:
    """(station, barcode) steps as replay lines, one every STEP_S seconds."""
    return [
        {"kind": "barcode", "data": data, "station": station, "at": _at(i * STEP_S, epoch_s)}
        for i, (station, data) in enumerate(steps)
    ]


def _config(
    tmp_path: Path,
    broker: Mosquitto,
    events: list[dict[str, Any]] | None,
    *,
    mqtt: dict[str, Any] | None = None,
    rate_per_s: float = 20_000,
) -> Path:
    readers = []
    if events is not None:
        replay = write_jsonl(tmp_path / "events.jsonl", events)
        readers.append(
            {
                "kind": "replay",
                "id": "replay-1",
                "station": "door-3",
                "file": str(replay),
                "rate_per_s": rate_per_s,
            }
        )
    return write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=STATIONS,
        readers=readers,
        mqtt=mqtt,
    )


async def _announce(broker: Mosquitto, db: Path, command: dict[str, Any]) -> dict[str, Any]:
    async with WmsSink("127.0.0.1", broker.port, db, ack=False, group="announcer") as sink:
        return await sink.announce(SITE, GATEWAY, command)


def _announce_cli(broker: Mosquitto, tmp_path: Path, command: dict[str, Any]) -> dict[str, Any]:
    """Announce as an integrator would: `gateway wms-sink --announce CSV` (adds only)."""
    assert command["action"] == "add"
    csv_path = tmp_path / "returns.csv"
    lines = ["rma,customer,epc,gtin,serial,qty,expires_at"]
    for rma in command["rmas"]:
        lines += [
            f"{rma['rma']},{rma['customer']},,{item['gtin']},{item['serial']},1,{rma['expires_at']}"
            for item in rma["items"]
        ]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "wms-sink",
            "--mqtt-host",
            "127.0.0.1",
            "--mqtt-port",
            str(broker.port),
            "--db",
            str(tmp_path / "announcer.db"),
            "--group",
            "announcer",
            "--no-ack",
            "--announce",
            str(csv_path),
            "--site",
            SITE,
            "--gateway",
            GATEWAY,
            "--duration",
            "0.1",
        ],
        capture_output=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
    first = out.stdout.decode().splitlines()[0]
    reply: dict[str, Any] = json.loads(first)["announce"]
    return reply


async def _announce_then_run(
    tmp_path: Path,
    broker: Mosquitto,
    command: dict[str, Any],
    events: list[dict[str, Any]],
    *,
    mqtt: dict[str, Any] | None = None,
    via_cli: bool = False,
) -> DaemonProcess:
    """Announce with a daemon that has no reader, then restart it with the replay reader.

    The replay reader starts at boot, so announcing first to a reader-less daemon is the one
    order that cannot race; the expected returns survive the restart in the buffer.
    """
    config = _config(tmp_path, broker, None, mqtt=mqtt)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        wait_until(lambda: _online(broker), 30, "gateway online")
        if via_cli:
            reply = _announce_cli(broker, tmp_path, command)
        else:
            reply = await _announce(broker, tmp_path / "announcer.db", command)
        assert reply.get("ok") is True, reply
        assert daemon.terminate() == 0
    except BaseException:
        if daemon.alive():
            daemon.kill()
        raise
    _config(tmp_path, broker, events, mqtt=mqtt)
    daemon.start()
    return daemon


def _online(broker: Mosquitto) -> bool:
    payload = retained(broker.port, f"{BASE}/status", timeout_s=1.0)
    return payload is not None and json.loads(payload).get("state") == "online"


def _rma(name: str, indexes: list[int]) -> dict[str, Any]:
    items = []
    for index in indexes:
        gtin, serial = _gtin_serial(index)
        items.append({"gtin": gtin, "serial": serial})
    return {"rma": name, "customer": "C-77", "items": items, "expires_at": "2099-01-01T00:00:00Z"}


async def test_expected_returns_match_receipts_flag_duplicates_and_complete_rmas_once(
    tmp_path: Path, broker: Mosquitto
) -> None:
    command = {"action": "add", "rmas": [_rma("RMA-A1", [0, 1]), _rma("RMA-B2", [2, 3])]}
    # 0, 1: RMA-A1 (complete); 0 again: duplicate; 2: RMA-B2 (stays open); 7: nobody announced it.
    order = [0, 1, 0, 2, 7]
    events = _script([("door-3", item_scan(i)) for i in order], time.time() - 3600)
    with Collector(broker.port, [f"{BASE}/movements"]) as collector:
        daemon = await _announce_then_run(tmp_path, broker, command, events, via_cli=True)
        try:
            collector.wait_for(
                lambda c: sum(m.json()["type"] == "receipt" for m in c.received()) >= len(order),
                60,
                "five receipts",
            )
            time.sleep(1.0)  # a second rma-complete, if the gateway wrongly made one, lands now
            by_id: dict[str, dict[str, Any]] = {}
            for message in collector.received():
                body = message.json()
                by_id.setdefault(body["id"], body)
        finally:
            daemon.terminate()
    movements = sorted(by_id.values(), key=lambda m: m["seq"])
    receipts = [m for m in movements if m["type"] == "receipt"]
    got = [(m["item"]["serial"], m["rma"], m["expected"], m.get("flags", [])) for m in receipts]
    assert got == [
        ("00000000", "RMA-A1", True, []),
        ("00000001", "RMA-A1", True, []),
        ("00000000", "RMA-A1", True, ["duplicate"]),
        ("00000002", "RMA-B2", True, []),
        ("00000007", None, False, []),
    ]
    completes = [m for m in movements if m["type"] == "rma-complete"]
    assert [m["rma"] for m in completes] == ["RMA-A1"]


def _epcis_validator(conformance: Path) -> jsonschema.Draft7Validator:
    schema = json.loads(
        (conformance / "epcis" / "schema" / "EPCIS-JSON-Schema.json").read_text(encoding="utf-8")
    )
    return jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


def _events_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    body = document.get("epcisBody", {})
    events: list[dict[str, Any]] = body.get("eventList", [])
    if "event" in body:
        events.append(body["event"])
    return events


INSPECTIONS = ["RESTOCK", "REPAIR", "RECYCLE", "DISPOSE", "DONATE"]
# The CBV pair the README promises per movement (and per scanned disposition).
WANT_EPCIS = {
    "receipt": [("receiving", "returned")] * 7,
    "inspection": [
        ("inspecting", "conformant"),
        ("repairing", "damaged"),
        ("inspecting", "non_conformant"),
        ("inspecting", "non_conformant"),
        ("inspecting", "non_sellable_other"),
    ],
    "restock": [("stocking", "sellable_accessible")],
    "disposal": [("collecting", "disposed"), ("destroying", "destroyed")],
}


async def test_every_movement_type_as_epcis_validates_and_a_broken_one_does_not(
    tmp_path: Path, broker: Mosquitto, conformance: Path
) -> None:
    validator = _epcis_validator(conformance)
    command = {"action": "add", "rmas": [_rma("RMA-E1", [0])]}
    steps = [("door-3", item_scan(i)) for i in range(7)]
    for index, code in enumerate(INSPECTIONS, start=1):
        steps += [("bench-1", f"DISP-{code}"), ("bench-1", item_scan(index))]
    steps += [("rack-1", "LOC-A1-03"), ("rack-1", item_scan(1))]
    # Disposal without a disposition scan, then after DISP-DISPOSE.
    steps += [("bin-1", item_scan(4)), ("bin-1", "DISP-DISPOSE"), ("bin-1", item_scan(3))]
    events = _script(steps, time.time() - 3600)
    expected_count = 1 + sum(len(v) for v in WANT_EPCIS.values())  # + one rma-complete
    with Collector(broker.port, [f"{BASE}/movements"]) as collector:
        daemon = await _announce_then_run(
            tmp_path, broker, command, events, mqtt={"format": "epcis"}
        )
        try:
            collector.wait_for(
                lambda c: len({m.payload for m in c.received()}) >= expected_count,
                60,
                "every movement as EPCIS",
            )
        finally:
            daemon.terminate()
    documents = sorted(
        {m.payload: m.json() for m in collector.received()}.values(), key=lambda d: d["dg:seq"]
    )
    assert len(documents) == expected_count
    got: dict[str, list[tuple[Any, Any]]] = {}
    for document in documents:
        errors = [e.message for e in validator.iter_errors(document)]
        assert errors == [], (document.get("dg:movementType"), errors)
        events_in = _events_of(document)
        assert len(events_in) == 1
        assert events_in[0]["eventID"] == f"urn:uuid:{document['dg:movementId']}"
        got.setdefault(document["dg:movementType"], []).append(
            (events_in[0].get("bizStep"), events_in[0].get("disposition"))
        )
    assert len(got.pop("rma-complete")) == 1
    assert got == WANT_EPCIS

    receipt = next(d for d in documents if d["dg:movementType"] == "receipt")
    assert validator.is_valid(receipt)
    broken = copy.deepcopy(receipt)
    _events_of(broken)[0]["bizStep"] = "returning"
    assert _events_of(broken)[0]["bizStep"] == "returning"
    assert not validator.is_valid(broken)


def test_a_gap_as_epcis_validates(tmp_path: Path, conformance: Path) -> None:
    validator = _epcis_validator(conformance)
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    collector = Collector(broker.port, [f"{BASE}/movements"])
    collector.prime()
    broker.stop()
    # A 64 KiB buffer with the broker away fills after a few hundred movements: the rest is a gap.
    config = write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=STATIONS,
        readers=[
            {
                "kind": "replay",
                "id": "replay-1",
                "station": "door-3",
                "file": str(write_jsonl(tmp_path / "events.jsonl", scan_events(2_000))),
                "rate_per_s": 20_000,
            }
        ],
        mqtt={"format": "epcis"},
        buffer={"max_bytes": 64 * 1024},
    )
    try:
        with DaemonProcess(config, tmp_path / "daemon.log"):
            wait_until(lambda: buffer_stats(config)["gaps_total"] > 0, 60, "a gap recorded")
            broker.start()
            with collector:
                collector.wait_for(
                    lambda c: any("dg:gap" in m.json() for m in c.received()),
                    60,
                    "the gap published",
                )
                gaps = [m.json() for m in collector.received() if "dg:gap" in m.json()]
    finally:
        broker.stop()
    for gap in gaps:
        assert gap["dg:movementType"] == "gap"
        errors = [e.message for e in validator.iter_errors(gap)]
        assert errors == [], errors


async def test_two_shared_consumers_store_each_id_exactly_once(
    tmp_path: Path, broker: Mosquitto
) -> None:
    total = 10_000
    config = _config(
        tmp_path, broker, scan_events(total), mqtt={"delivery": "wms", "ack_timeout_s": 60.0}
    )

    # A store each (to see the split), so each sees half of the stream: ordering by seq needs
    # the group's consumers to share one store, as the fleet's do.
    one = WmsSink("127.0.0.1", broker.port, tmp_path / "wms-1.db", group="wms", ordered=False)
    two = WmsSink("127.0.0.1", broker.port, tmp_path / "wms-2.db", group="wms", ordered=False)
    async with one, two:
        await one.wait_connected()
        await two.wait_connected()
        with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                if await one.count() + await two.count() >= total:
                    break
                assert daemon.alive()
                await asyncio.sleep(0.5)
            await asyncio.to_thread(
                wait_until,
                lambda: buffer_stats(config)["pending"] == 0,
                60,
                "every movement acknowledged",
            )
            assert one.stats.duplicates + two.stats.duplicates == 0
            ids_one, ids_two = await one.ids(), await two.ids()
    assert ids_one & ids_two == set()
    assert len(ids_one | ids_two) == total
    assert ids_one, "each consumer in the group must get part of the stream"
    assert ids_two, "each consumer in the group must get part of the stream"


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def test_replay_from_seq_redelivers_original_ids_and_the_sink_count_stays(
    tmp_path: Path, broker: Mosquitto
) -> None:
    total, from_seq = 20, 11
    config = _config(tmp_path, broker, scan_events(total))

    with Collector(broker.port, [f"{BASE}/movements"]) as collector:
        async with WmsSink("127.0.0.1", broker.port, tmp_path / "wms.db") as sink:
            await sink.wait_connected()
            with DaemonProcess(config, tmp_path / "daemon.log"):

                async def all_in() -> bool:
                    return len(collector.received()) >= total and await sink.count() >= total

                await _until(all_in, 60, "first delivery")
                before = await sink.count()
                reply = await sink.command(
                    SITE, GATEWAY, "replay", json.dumps({"from_seq": from_seq}).encode()
                )

                async def again() -> bool:
                    return len(collector.received()) >= 2 * total - from_seq + 1

                await _until(again, 30, "replayed movements")

                async def sink_saw_copies() -> bool:
                    return sink.stats.duplicates >= total - from_seq + 1

                await _until(sink_saw_copies, 30, "the sink to get the replayed copies")
                # By time range: everything made since 2000 (all of it) comes again.
                by_time = await sink.command(
                    SITE, GATEWAY, "replay", json.dumps({"from": "2000-01-01T00:00:00Z"}).encode()
                )

                async def all_again() -> bool:
                    return len(collector.received()) >= 3 * total - from_seq + 1

                await _until(all_again, 30, "movements replayed by time range")
                after = await sink.count()
    assert reply.get("ok") is True, reply
    assert by_time.get("ok") is True, by_time
    assert by_time["republished"] == total
    assert before == after == total
    messages = [m.json() for m in collector.received()]
    first, second = messages[:total], messages[total : 2 * total - from_seq + 1]
    third = messages[2 * total - from_seq + 1 :]
    assert sorted(m["seq"] for m in third) == list(range(1, total + 1))
    originals = {m["id"]: m for m in first}
    assert len(originals) == total
    assert sorted(m["seq"] for m in second) == list(range(from_seq, total + 1))
    for message in second:
        assert message == originals[message["id"]], "a replayed copy must equal the original"


def test_retained_kpis_equal_the_hand_computed_day(tmp_path: Path, broker: Mosquitto) -> None:
    steps = [("door-3", item_scan(i)) for i in range(6)]
    for index, code in enumerate(["RESTOCK", "REPAIR", "RECYCLE", "DISPOSE", "DONATE"]):
        steps += [("bench-1", f"DISP-{code}"), ("bench-1", item_scan(index))]
    steps += [("rack-1", "LOC-A1-03"), ("rack-1", item_scan(0)), ("rack-1", item_scan(5))]
    epoch_s = time.time() - 7200
    events = _script(steps, epoch_s)
    received_at = {i: epoch_s + i * STEP_S for i in range(6)}
    restocked_at = {0: epoch_s + (len(steps) - 2) * STEP_S, 5: epoch_s + (len(steps) - 1) * STEP_S}
    delays = sorted(restocked_at[i] - received_at[i] for i in restocked_at)
    # By hand: 6 received; recovered = item 1 (repair) + items 0 and 5 (restocked) = 3.
    want_counts = {"receipt": 6, "inspection": 5, "restock": 2, "disposal": 0}
    want_dispositions = {"RESTOCK": 1, "REPAIR": 1, "RECYCLE": 1, "DISPOSE": 1, "DONATE": 1}
    config = _config(tmp_path, broker, events, mqtt={"kpi_interval_s": 1.0})
    kpi: dict[str, Any] = {}

    def settled() -> bool:
        payload = retained(broker.port, f"{BASE}/kpi", timeout_s=2.0)
        if payload is None:
            return False
        kpi.update(json.loads(payload))
        return bool(kpi.get("counts", {}).get("restock") == 2)

    with DaemonProcess(config, tmp_path / "daemon.log"):
        wait_until(settled, 60, "a KPI snapshot with both restocks")
    counts = {k: kpi["counts"].get(k) for k in want_counts}
    assert counts == want_counts
    assert {k: kpi["dispositions"].get(k) for k in want_dispositions} == want_dispositions
    assert kpi["received"] == 6
    assert kpi["recovery_rate"] == pytest.approx(3 / 6)
    assert kpi["unexpected_share"] == pytest.approx(1.0)
    assert kpi["receipt_to_restock_s"]["n"] == 2
    assert kpi["receipt_to_restock_s"]["median"] == pytest.approx(delays[0], abs=0.01)
    assert kpi["receipt_to_restock_s"]["p90"] == pytest.approx(delays[1], abs=0.01)


@pytest.mark.parametrize(
    "content",
    ["rma,customer,gtin,serial,qty\nRMA-1,C,0061,1,two\n", None],
    ids=["qty-not-a-number", "missing-file"],
)
def test_wms_sink_bad_announce_csv_exits_2_naming_the_problem(
    tmp_path: Path, content: str | None
) -> None:
    csv_path = tmp_path / "returns.csv"
    if content is not None:
        csv_path.write_text(content, encoding="utf-8")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "wms-sink",
            "--mqtt-port",
            "1",
            "--db",
            str(tmp_path / "wms.db"),
            "--announce",
            str(csv_path),
            "--site",
            SITE,
            "--gateway",
            GATEWAY,
        ],
        capture_output=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    stderr = out.stderr.decode(errors="replace")
    assert "Traceback" not in stderr
    assert out.returncode == 2, stderr
