"""Fleet benchmark: 20 gateway daemons on one mosquitto, three shared MQTT 5 consumers, one store.

Each daemon is a real `gateway run` process with its own id, state folder and replay file of
5,000 distinct scans (`delivery = "wms"`); three `WmsSink`s in the shared-subscription group `wms`
store into one SQLite file and ack after the commit. Measured: movements/s for the fleet (stored
movements over the time from the first daemon's start to the last movement stored) and the
broker's CPU over the same time (from /proc). Checked: 0 lost, 0 stored twice, per-gateway `seq`
complete, every outbox empty. Writes its own section of bench/README.md (between markers, the
rest of the file is left alone) and prints JSON.

    .venv/bin/python bench/bench_fleet.py [--gateways 20] [--scans 5000] [--consumers 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fleet import FleetResult, run_fleet  # noqa: E402

README = ROOT / "bench" / "README.md"
BEGIN = "<!-- bench_fleet:begin (written by bench/bench_fleet.py) -->"
END = "<!-- bench_fleet:end -->"


def main() -> int:
    """Run the fleet, print the result as JSON, write the README section; 1 if a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--scans", type=int, default=5_000, help="scans replayed per gateway")
    parser.add_argument("--consumers", type=int, default=3)
    parser.add_argument("--rate", type=float, default=2_000, help="replay rate per gateway")
    parser.add_argument("--no-readme", action="store_true", help="print only")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        result = asyncio.run(
            run_fleet(
                Path(tmp),
                gateways=args.gateways,
                scans_each=args.scans,
                consumers=args.consumers,
                rate_per_s=args.rate,
                timeout_s=1800,
            )
        )
    ran_s = time.monotonic() - started
    print(json.dumps(result.as_dict(), indent=2))
    failures = _failures(result)
    if not args.no_readme:
        _write_section(_section(result, ran_s, failures))
    return 1 if failures else 0


def _failures(result: FleetResult) -> list[str]:
    failures = []
    if result.stored != result.expected:
        failures.append(f"stored {result.stored} of {result.expected}")
    if result.stored_twice:
        failures.append(f"{result.stored_twice} movements stored twice")
    if any(result.seq_gaps.values()):
        failures.append(f"seq gaps: {result.seq_gaps}")
    if result.pending_left:
        failures.append(f"{result.pending_left} movements left unacknowledged")
    return failures


def _section(result: FleetResult, ran_s: float, failures: list[str]) -> str:
    mosquitto = _version(["mosquitto", "-h"], "/usr/sbin/mosquitto")
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    verdict = "PASS" if not failures else "FAIL: " + "; ".join(failures)
    gaps = sum(result.seq_gaps.values())
    shares = ", ".join(f"{n:,}" for n in result.per_consumer)
    rows = [
        (
            "gateways (daemon processes) x scans replayed each",
            f"{result.gateways} x {result.scans_each:,}",
            "20 x 5,000",
            "-",
        ),
        (
            "movements stored / expected",
            f"{result.stored:,} / {result.expected:,}",
            "all",
            _verdict(result.stored == result.expected),
        ),
        (
            "movements stored twice (a second copy reached the store)",
            str(result.stored_twice),
            "0",
            _verdict(not result.stored_twice),
        ),
        ("`seq` missing, all gateways", str(gaps), "0", _verdict(not gaps)),
        (
            "outbox rows left unacknowledged",
            str(result.pending_left),
            "0",
            _verdict(not result.pending_left),
        ),
        (
            "fleet throughput, first start to last movement stored",
            f"{result.movements_per_s:,.0f} movements/s ({result.drain_s:.1f} s)",
            "info",
            "-",
        ),
        (
            "mosquitto CPU over that time",
            f"{result.broker_cpu_s:.1f} CPU s = {result.broker_cpu_share:.0%} of one core",
            "info",
            "-",
        ),
        (
            "shared consumers, movements each",
            f"{result.consumers}: {shares}",
            "each > 0",
            _verdict(all(result.per_consumer)),
        ),
    ]
    run = (
        f"Run: {now}, {_cores()} cores shared with other work, {mosquitto}. "
        "Reproduce: `.venv/bin/python bench/bench_fleet.py`"
    )
    notes = [
        f"- overall: {verdict}",
        (
            '- `delivery = "wms"`: a movement leaves an outbox only when a consumer acked it after '
            "its commit; the consumers are one MQTT 5 shared-subscription group "
            "(`$share/wms/returns/+/+/movements`) writing to one SQLite store keyed by id"
        ),
        (
            "- the daemons, the consumers and mosquitto share the same cores: the fleet's "
            "throughput is bound by the daemons' CPU (pipeline, SQLite, JSON), not by the broker, "
            "whose share of one core is given above"
        ),
    ]
    return "\n".join(
        [
            BEGIN,
            f"## fleet (`bench/bench_fleet.py`, ran in {ran_s:.0f} s)",
            "",
            run,
            "",
            "| measure | figure | goal | result |",
            "|---|---|---|---|",
            *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
            "",
            *notes,
            END,
        ]
    )


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _write_section(section: str) -> None:
    text = README.read_text(encoding="utf-8") if README.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    README.write_text(text, encoding="utf-8")


def _version(command: list[str], fallback: str) -> str:
    binary = shutil.which(command[0]) or fallback
    try:
        out = subprocess.run(
            [binary, *command[1:]], capture_output=True, text=True, timeout=5, check=False
        )
    except OSError:
        return command[0]
    first = (out.stdout or out.stderr).splitlines()
    return first[0].strip() if first else command[0]


def _cores() -> int:
    return os.cpu_count() or 1


if __name__ == "__main__":
    raise SystemExit(main())
