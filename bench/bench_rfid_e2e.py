"""RFID end to end through the real daemon: reads taken in per CPU-second of the daemon process.

The LLRP simulator (in this process, on its own thread) plays a busy receiving portal over TCP
(`bench/rfid_portal.py`): pallets of items cross from the outside antennas (1, 2) to the inside
ones (3, 4) every `--pallet-every-s`, so a few hundred tags are in view at once, plus strays
parked inside. A real `gateway run --config ...` subprocess reads it with sllurp, journals,
smooths, makes receipts and publishes them to a private mosquitto, where a subscriber in this
process counts them.

Two stream shapes of that same door, each measured against its own baseline:
- one tag per report (`ROReportSpec` N = 1, as many readers are run: a report per read), offered
  at `--single-offered` reads/s;
- reports of `--batched-n` tags, offered at `--batched-offered` reads/s.

The figure: reads the daemon journaled (sum of the journal's per-row read counts, read from its
SQLite file) over the CPU the daemon process used (utime + stime of every thread, /proc/PID/stat)
from the start of inventory until it has caught up (every read sent is journaled, the pipeline
cursor is at the last journal row, and every receipt made is published).

The baseline: the same scenario, same shape, read by bare sllurp (`bench/sllurp_client.py`,
sllurp's own LLRPReaderClient counting reads in its tag report callback), its CPU per read
measured the same way. `--rounds` alternated rounds (bare sllurp, daemon, ...) of `--round-s`
each give the medians, shape after shape. Then one `--duration-s` daemon run per shape checks
that the backlog does not grow: one tag per report at `--keep-up-offered` reads/s, the batched
shape at its own rate. Backlog samples every few seconds: reads sent minus reads journaled, plus
journal rows the pipeline has not taken (the daemon's status message), with the events queued
before the journal beside them.
Those keep-up runs run under py-spy when it is installed (the `bench` extra; `--profile-dir DIR`
keeps the raw folded stacks, `--no-profile` skips it): the rows then give the CPU shares.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cpu_profile import (  # noqa: E402
    profile_shares,
    profiled_pid,
    py_spy,
    record_command,
    thread_names,
    top_functions,
)
from daemon_harness import cpu_s, median  # noqa: E402
from rfid_portal import (  # noqa: E402
    JournalProbe,
    busy_portal,
    per_tag_rate,
    thread_cpu_s,
)

from gateway.readers.llrp.scenario import Scenario  # noqa: E402
from gateway.readers.llrp.simulator import LlrpSimulator  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402
from tests.support.daemon import write_config  # noqa: E402
from tests.support.llrp_sim import SimulatorThread  # noqa: E402
from tests.support.portal import portal_profile  # noqa: E402
from tests.support.wms import Collector  # noqa: E402

BASE = "returns/milan-returns/dock-3"
# Everything journaled and processed and no receipt for this long: the missing ones never come.
QUIET_S = 5.0
# The station's visit window: the config default. A visit closes absent_s after its last read by
# the wall clock, so a daemon that falls that far behind splits visits and loses receipts.
ABSENT_S = 3.0


@dataclass(frozen=True)
class Shape:
    """One stream shape of the same door: tags per RO_ACCESS_REPORT and reads offered per second."""

    key: str
    label: str
    tags_per_report: int
    offered_reads_per_s: float
    keep_up_reads_per_s: float
    goal_reads_per_cpu_s: int


@dataclass(frozen=True)
class Run:
    """One run of the door: its shape, length, offered rate, and where py-spy writes (if at all)."""

    shape: Shape
    duration_s: float
    offered_reads_per_s: float
    profile: Path | None = None


def _shapes(args: argparse.Namespace) -> list[Shape]:
    known = {
        "single": Shape(
            "single", "one tag per report", 1, args.single_offered, args.keep_up_offered, 20_000
        ),
        "batched": Shape(
            "batched",
            f"reports of {args.batched_n} tags",
            args.batched_n,
            args.batched_offered,
            args.batched_offered,
            33_600,
        ),
    }
    return [known[key] for key in args.shapes]


def _scenario(args: argparse.Namespace, run: Run) -> Scenario:
    door = {
        "duration_s": run.duration_s,
        "items_per_pallet": args.items_per_pallet,
        "pallet_every_s": args.pallet_every_s,
        "strays": args.strays,
    }
    return busy_portal(reads_per_s=per_tag_rate(run.offered_reads_per_s, **door), **door)


def run_baseline(args: argparse.Namespace, workdir: Path, run: Run) -> dict[str, Any]:
    """One baseline round: the same scenario read by bare sllurp (bench/sllurp_client.py)."""
    scenario = _scenario(args, run)
    workdir.mkdir(parents=True)
    count_file = workdir / "reads"
    with SimulatorThread(scenario) as sim:
        command = [
            sys.executable, str(ROOT / "bench" / "sllurp_client.py"), "127.0.0.1", str(sim.port),
            str(count_file), "--report-every-n", str(run.shape.tags_per_report),
        ]  # fmt: skip
        proc = subprocess.Popen(command, cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while sim.scenario_time_s() is None:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("bare sllurp never started inventory")
                time.sleep(0.01)
            cpu0, wall0 = cpu_s(proc.pid), time.monotonic()
            while (sim.scenario_time_s() or 0.0) < scenario.duration_s:
                time.sleep(0.05)
            wall_scenario = time.monotonic() - wall0
            # Until it has every read sent, or has taken nothing new for 2 s (now and then
            # sllurp's callback never sees a report of the run; the shortfall is reported).
            deadline = time.monotonic() + 60
            received, changed_at = -1, time.monotonic()
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError, ValueError):
                    now_received = int(count_file.read_text())
                    if now_received != received:
                        received, changed_at = now_received, time.monotonic()
                if received >= sim.record.tag_reads_sent or time.monotonic() - changed_at > 2.0:
                    break
                time.sleep(0.05)
            cpu_total = cpu_s(proc.pid) - cpu0
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sent = sim.record.tag_reads_sent
    if received < 0.999 * sent:
        raise RuntimeError(f"bare sllurp took in {received:,} of {sent:,} reads")
    return {
        "reads": received,
        "reads_missing": sent - received,
        "reports_sent": sim.record.reports_sent,
        "cpu_s": round(cpu_total, 2),
        "reads_per_cpu_s": round(received / cpu_total) if cpu_total else 0,
        "offered_reads_per_s": round(sent / wall_scenario),
        "cores_during_scenario": round(cpu_total / wall_scenario, 2),
    }


def run_once(args: argparse.Namespace, workdir: Path, run: Run) -> dict[str, Any]:
    """One run: broker, simulator, daemon; returns the figures."""
    scenario = _scenario(args, run)
    pallet_items = sum(1 for t in scenario.tags if t.role == "pallet")
    profiles = workdir / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "bench-portal.toml").write_text(
        portal_profile(
            "bench-portal",
            tag_population=256,
            report_every_n_tags=run.shape.tags_per_report,
            keepalive_s=2.0,
        )
    )
    with Mosquitto(workdir / "broker") as broker, SimulatorThread(scenario) as sim:
        config = write_config(
            workdir / "gateway.toml",
            broker_port=broker.port,
            state_dir=workdir / "state",
            stations=[{"id": "door-3", "kind": "receiving", "absent_s": ABSENT_S}],
            readers=[
                {
                    "kind": "llrp",
                    "id": "door-3-portal",
                    "host": "127.0.0.1",
                    "port": sim.port,
                    "station": "door-3",
                    "profile": "bench-portal",
                    "zones": {"outside": [1, 2], "inside": [3, 4]},
                }
            ],
            buffer={"max_bytes": 2_000_000_000},
            extra=f'[profiles]\ndir = "{profiles}"\n',
        )
        with Collector(broker.port, [f"{BASE}/movements", f"{BASE}/status"]) as collector:
            return _drive(args, run, config, workdir, sim, collector, pallet_items)


def _drive(
    args: argparse.Namespace,
    run: Run,
    config: Path,
    workdir: Path,
    sim: LlrpSimulator,
    collector: Collector,
    pallet_items: int,
) -> dict[str, Any]:
    command = [sys.executable, "-m", "gateway", "run", "--config", str(config)]
    command += ["--log-format", "json", "--log-level", "INFO"]
    if run.profile:
        command = record_command(run.profile, command)
    log = (workdir / "daemon.log").open("ab")
    proc = subprocess.Popen(command, stdout=log, stderr=log, cwd=ROOT, env=os.environ.copy())
    probe = JournalProbe(workdir / "state" / "buffer.sqlite3")
    samples: list[dict[str, float]] = []
    try:
        daemon_pid = _daemon_pid(proc, profiled=bool(run.profile))
        deadline = time.monotonic() + 30
        while sim.scenario_time_s() is None:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the daemon never started inventory; see " + str(log.name))
            time.sleep(0.01)
        cpu0, wall0 = cpu_s(daemon_pid), time.monotonic()
        threads0 = thread_cpu_s(daemon_pid)
        next_sample = wall0 + args.sample_every_s
        while (sim.scenario_time_s() or 0.0) < run.duration_s:
            time.sleep(0.05)
            if time.monotonic() >= next_sample:
                next_sample += args.sample_every_s
                probe.sample()
                lag = _pipeline_lag(collector)
                samples.append(
                    {
                        "t_s": round(time.monotonic() - wall0, 1),
                        "sent": sim.record.tag_reads_sent,
                        "journaled": probe.reads,
                        "behind_reads": sim.record.tag_reads_sent - probe.reads,
                        "queued_events": lag.get("queued_events", -1),
                        "pipeline_rows_behind": lag.get("rows_behind", -1),
                        "rows_past_checkpoint": probe.last_id - probe.cursor,
                        "cpu_s": round(cpu_s(daemon_pid) - cpu0, 2),
                    }
                )
        wall_scenario = time.monotonic() - wall0
        cpu_scenario = cpu_s(daemon_pid) - cpu0
        caught_up = _catch_up(sim, probe, collector, pallet_items)
        cpu_total = cpu_s(daemon_pid) - cpu0
        wall_total = time.monotonic() - wall0
        threads = {
            tid: round(used - threads0.get(tid, 0.0), 2)
            for tid, used in thread_cpu_s(daemon_pid).items()
        }
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(_daemon_pid(proc, profiled=bool(run.profile)), signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        if args.keep_log:
            shutil.copy(workdir / "daemon.log", args.keep_log)
    probe.sample()
    movements = [r.json() for r in collector.received()]
    return {
        "reads_sent": sim.record.tag_reads_sent,
        "reports_sent": sim.record.reports_sent,
        "reads_journaled": probe.reads,
        "journal_rows": probe.last_id,
        "daemon_cpu_s": round(cpu_total, 2),
        "wall_s": round(wall_total, 1),
        "reads_per_cpu_s": round(probe.reads / cpu_total) if cpu_total else 0,
        "offered_reads_per_s": round(sim.record.tag_reads_sent / wall_scenario),
        "daemon_cores_during_scenario": round(cpu_scenario / wall_scenario, 2),
        "caught_up": caught_up,
        "catch_up_s": round(wall_total - wall_scenario, 1),
        "pallet_items": pallet_items,
        "movements_published": len(movements),
        "movements_by_type": dict(Counter(m["type"] for m in movements)),
        "distinct_receipts": len(
            {m["item"].get("epc") for m in movements if m["type"] == "receipt"}
        ),
        "thread_cpu_s": threads,
        "samples": samples,
    }


def _catch_up(
    sim: LlrpSimulator, probe: JournalProbe, collector: Collector, pallet_items: int
) -> bool:
    """Wait until every read sent is journaled, the cursor at the end, every receipt published."""
    deadline = time.monotonic() + 120
    receipts, changed_at = -1, time.monotonic()
    while time.monotonic() < deadline:
        probe.sample()
        journal_done = probe.reads >= sim.record.tag_reads_sent and probe.cursor >= probe.last_id
        now_receipts = _count_receipts(collector)
        if now_receipts != receipts:
            receipts, changed_at = now_receipts, time.monotonic()
        if journal_done and receipts >= pallet_items:
            return True
        if journal_done and time.monotonic() - changed_at > QUIET_S:
            return False  # all read and processed, yet receipts missing: said in the result
        time.sleep(0.1)
    return False


def _daemon_pid(proc: subprocess.Popen[bytes], *, profiled: bool) -> int:
    """The daemon's pid: the child itself, or py-spy's child when profiled."""
    return profiled_pid(proc) if profiled else proc.pid


def _pipeline_lag(collector: Collector) -> dict[str, int]:
    """The pipeline's live lag from the daemon's latest status message (sent every second)."""
    for message in reversed(collector.received("/status")):
        lag = message.json().get("pipeline")
        if lag:
            return dict(lag)
    return {}


def _count_receipts(collector: Collector) -> int:
    return sum(1 for r in collector.received() if b'"type":"receipt"' in r.payload)


def _rate_row(
    shape: Shape, rounds: dict[str, list[dict[str, Any]]], args: argparse.Namespace
) -> dict[str, Any]:
    """Reads per daemon CPU-second against bare sllurp, for one shape."""
    daemon = [x["reads_per_cpu_s"] for x in rounds["daemon"]]
    bare = [x["reads_per_cpu_s"] for x in rounds["sllurp"]]
    value, baseline = round(median(daemon)), round(median(bare))
    last = rounds["daemon"][-1]
    made_every_round = all(
        x["caught_up"] and x["distinct_receipts"] == x["pallet_items"] for x in rounds["daemon"]
    )
    offered = round(median([x["offered_reads_per_s"] for x in rounds["daemon"]]))
    return {
        "name": (
            f"RFID reads per CPU-second of the daemon, end to end, {shape.label} "
            f"({offered:,} reads/s offered)"
        ),
        "value": value,
        "unit": "reads/CPU-s",
        "baseline": baseline,
        "baseline_unit": "reads/CPU-s bare sllurp client, same stream (decode and count only)",
        "ratio": round(value / baseline, 3) if baseline else None,
        "goal": f">= {shape.goal_reads_per_cpu_s:,} with movements made and published",
        "pass": value >= shape.goal_reads_per_cpu_s and made_every_round,
        "note": (
            f"rfid e2e, {shape.label}: LLRP simulator (bench process) -> TCP -> `gateway run` -> "
            f"SQLite -> mosquitto: reads journaled (sum of read counts, from its SQLite file) / "
            f"daemon CPU (utime+stime, all threads, /proc) from inventory start until every read "
            f"sent is journaled, the pipeline has consumed the journal and every receipt is "
            f"published. Baseline: bench/sllurp_client.py, sllurp's own LLRPReaderClient on the "
            f"same scenario and report size, summing TagSeenCount in its tag report callback, its "
            f"CPU from inventory start until it has every read sent. {len(daemon)} alternated "
            f"rounds of {args.round_s:.0f} s each, medians (daemon {daemon}, bare sllurp {bare}; "
            f"bare sllurp used {[x['cores_during_scenario'] for x in rounds['sllurp']]} of a "
            f"core). Last daemon round: {last['reads_journaled']:,} reads in "
            f"{last['reports_sent']:,} reports ({last['journal_rows']:,} rows after collapsing "
            f"repeats) in {last['daemon_cpu_s']} s of CPU, {last['movements_published']:,} "
            f"movements published ({last['distinct_receipts']:,} distinct receipts of "
            f"{last['pallet_items']:,} items carried in), {last['daemon_cores_during_scenario']} "
            f"of a core at {last['offered_reads_per_s']:,} reads/s offered; every round made and "
            f"published all its receipts: {made_every_round}; reads sent that bare sllurp's "
            f"callback never saw, per round: {[x['reads_missing'] for x in rounds['sllurp']]}"
        ),
    }


def _keep_up_row(shape: Shape, keep: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The backlog of one long daemon run: bounded by a second of reads at every sample."""
    samples = keep["samples"]
    backlog = [s["behind_reads"] + s["pipeline_rows_behind"] for s in samples]
    queued = [s["queued_events"] for s in samples]
    final = backlog[-1] if backlog else 0
    offered = keep["offered_reads_per_s"]
    bounded = bool(backlog) and max(backlog) <= offered
    shares = keep.get("profile_shares_pct")
    profiled = (
        f"; CPU shares (py-spy, GIL holder): {shares}; top leaf functions: {keep['top_functions']}"
        if shares
        else ""
    )
    goal_offered = shape.keep_up_reads_per_s
    return {
        "name": (
            f"backlog after {args.duration_s:.0f} s at {offered:,} reads/s offered, {shape.label}"
        ),
        "value": final,
        "unit": "reads behind",
        "baseline": None,
        "baseline_unit": "",
        "ratio": None,
        "goal": (
            f"{goal_offered:,.0f} reads/s for 60 s, backlog under 1 s of reads at every sample"
        ),
        "pass": (
            bounded
            and keep["caught_up"]
            and offered >= 0.95 * goal_offered
            and args.duration_s >= 60
        ),
        "note": (
            f"rfid keep-up, {shape.label}: one daemon run of the scenario; backlog = reads sent "
            "but not journaled (simulator's count - the journal's, in SQLite) + journal rows the "
            "pipeline has not taken (its live lag, from the daemon's status message of the last "
            f"second), every {args.sample_every_s:.0f} s: {backlog}; of which events read and "
            f"queued for the journal (status `pipeline.queued_events`): {queued}; the checkpoint "
            "saved in SQLite trails by up to a second more (rows past it: "
            f"{[s['rows_past_checkpoint'] for s in samples]}); caught up "
            f"{keep['catch_up_s']} s after the load ended (visits close {ABSENT_S:.0f} s after "
            f"their last read): {keep['caught_up']}; {keep['reads_per_cpu_s']:,} reads/CPU-s, "
            f"{keep['daemon_cores_during_scenario']} of a core, "
            f"{keep['movements_published']:,} movements published ({keep['distinct_receipts']:,} "
            f"distinct receipts of {keep['pallet_items']:,} items); CPU by thread: "
            f"{keep['thread_cpu_s']}{profiled}"
        ),
    }


def main() -> int:
    """Run the benchmark and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", nargs="+", choices=["single", "batched"], default=None)
    parser.add_argument("--single-offered", type=float, default=8_000.0, help="reads/s")
    parser.add_argument("--keep-up-offered", type=float, default=10_000.0, help="reads/s")
    parser.add_argument("--batched-n", type=int, default=40, help="tags per RO_ACCESS_REPORT")
    parser.add_argument("--batched-offered", type=float, default=12_000.0, help="reads/s")
    parser.add_argument("--duration-s", type=float, default=60.0, help="each keep-up run")
    parser.add_argument("--items-per-pallet", type=int, default=100)
    parser.add_argument("--pallet-every-s", type=float, default=1.2)
    parser.add_argument("--strays", type=int, default=40)
    parser.add_argument("--sample-every-s", type=float, default=5.0)
    parser.add_argument("--profile-dir", type=Path, help="keep py-spy's raw output here")
    parser.add_argument(
        "--no-profile", action="store_true", help="do not profile even if py-spy is installed"
    )
    parser.add_argument("--no-keep-up", action="store_true", help="rounds only")
    parser.add_argument("--keep-log", type=Path, help="copy the daemon's log here")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds, each side")
    parser.add_argument("--round-s", type=float, default=20.0, help="scenario length of a round")
    parser.add_argument("--quick", action="store_true", help="1 round of 10 s, keep-up 20 s")
    args = parser.parse_args()
    if args.quick:
        args.duration_s, args.rounds, args.round_s = 20.0, 1, 10.0
    args.shapes = args.shapes or ["single", "batched"]
    started = time.monotonic()
    profiling = not args.no_profile and py_spy() is not None
    result: dict[str, Any] = {"shapes": {}}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-rfid-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        profile_dir = args.profile_dir or tmp
        profile_dir.mkdir(parents=True, exist_ok=True)
        for shape in _shapes(args):
            rounds: dict[str, list[dict[str, Any]]] = {"sllurp": [], "daemon": []}
            run = Run(shape, args.round_s, shape.offered_reads_per_s)
            for i in range(args.rounds):
                rounds["sllurp"].append(run_baseline(args, tmp / f"{shape.key}-sllurp-{i}", run))
                rounds["daemon"].append(run_once(args, tmp / f"{shape.key}-daemon-{i}", run))
            rows.append(_rate_row(shape, rounds, args))
            result["shapes"][shape.key] = {"rounds": rounds}
            if args.no_keep_up:
                continue
            profile = profile_dir / f"keep-up-{shape.key}.py-spy" if profiling else None
            keep_run = Run(shape, args.duration_s, shape.keep_up_reads_per_s, profile)
            keep = run_once(args, tmp / f"{shape.key}-keep-up", keep_run)
            if profile is not None:
                keep["profile_shares_pct"] = profile_shares(profile)
                keep["top_functions"] = top_functions(profile)
                names = thread_names(profile)
                keep["thread_cpu_s"] = {
                    names.get(int(tid), str(tid)): used
                    for tid, used in keep["thread_cpu_s"].items()
                }
            rows.append(_keep_up_row(shape, keep, args))
            result["shapes"][shape.key]["keep_up"] = keep
    result["ran_s"] = round(time.monotonic() - started, 1)
    result["results"] = rows
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
