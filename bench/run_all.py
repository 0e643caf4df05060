"""Run every benchmark, each in its own subprocess, and write bench/README.md with the figures."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

Result = dict[str, Any]


_KEPT = re.compile(r"<!-- (\w+):begin.*?-->.*?<!-- \1:end -->", re.DOTALL)


def _kept_sections(text: str) -> list[str]:
    """The marked sections other benches wrote into the report (NAME:begin ... NAME:end)."""
    return [match.group(0) for match in _KEPT.finditer(text)]


def main() -> int:
    """Run the benches, print a summary, write bench/README.md; exit 1 if a bench failed to run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, passed to every bench")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per bench")
    parser.add_argument("--only", nargs="*", help="bench names to run")
    parser.add_argument("--out", type=Path, default=BENCH / "README.md")
    args = parser.parse_args()
    sections: list[tuple[str, list[Result], str]] = []
    failed = False
    load_start = os.getloadavg()
    run_started = dt.datetime.now(dt.UTC)
    for name, adapter in BENCHES:
        if args.only and name not in args.only:
            continue
        script = BENCH / f"bench_{name}.py"
        if not script.exists():
            sections.append((name, [], "script missing"))
            failed = True
            continue
        cmd = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        started = time.perf_counter()
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT, check=False
            )
        except subprocess.TimeoutExpired:
            sections.append((name, [], f"timed out after {args.timeout:.0f} s"))
            failed = True
            continue
        took_s = time.perf_counter() - started
        data = _last_json(proc.stdout)
        if proc.returncode != 0 or data is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            sections.append((name, [], f"failed (exit {proc.returncode}): {' / '.join(tail)}"))
            failed = True
            continue
        results = data["results"] if "results" in data else adapter(data)
        sections.append((name, results, f"ran in {took_s:.0f} s"))
        for r in results:
            print("  ", _fmt_row(r), flush=True)
    load_end = os.getloadavg()
    load = (load_start, load_end)
    old = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
    if args.only and old:
        # Only some benches ran: their sections replace the ones of the last full run.
        text = _merge(old, sections, quick=args.quick, load=load, started=run_started)
    else:
        text = _readme(sections, quick=args.quick, load=load)
        # Sections the long benches write on their own runs (fleet, expected returns) are kept.
        kept = _kept_sections(old)
        if kept:
            text = text.rstrip("\n") + "\n\n" + "\n\n".join(kept) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 1 if failed else 0


def _passthrough(d: Result) -> list[Result]:
    return list(d.get("results", []))


BENCHES: list[tuple[str, Callable[[Result], list[Result]]]] = [
    ("ingest", _passthrough),
    ("memory", _passthrough),
    ("drain", _passthrough),
    ("scans", _passthrough),
    ("rfid", _passthrough),
    ("rfid_e2e", _passthrough),
    ("pipeline", _passthrough),
    ("latency", _passthrough),
    # Not console: bench_console.py opens chromium for about a minute, and its section (two
    # pages, what each figure times) is written by hand between markers, as expected returns'.
]


def _last_json(stdout: str) -> Result | None:
    """The last JSON object in a bench's stdout (one line, or indented over many)."""
    decoder = json.JSONDecoder()
    lines = stdout.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if not lines[i].startswith("{"):
            continue
        try:
            obj, _ = decoder.raw_decode("\n".join(lines[i:]))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _num(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 100:
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    return f"{round(float(str(value))):,}"


def _fmt_row(r: Result) -> str:
    verdict = {True: "PASS", False: "MISS", None: "-"}[r.get("pass")]
    return (
        f"{r['name']}: {_num(r['value'])} {r['unit']} | baseline {_num(r.get('baseline'))} "
        f"{r.get('baseline_unit', '')} | ratio {r.get('ratio')} | goal {r.get('goal')} | {verdict}"
    )


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _machine() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    paho = _version([sys.executable, "-c", "import paho.mqtt; print(paho.mqtt.__version__)"])
    mosq = _version(["mosquitto", "-h"])
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores (shared with other work while this ran)",
        f"- RAM: {ram}",
        f"- OS: {platform.platform()}",
        (
            f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"paho-mqtt {paho}, {mosq}"
        ),
    ]


def _load(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def _readme(
    sections: list[tuple[str, list[Result], str]],
    *,
    quick: bool,
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = ".venv/bin/python bench/run_all.py" + (" --quick" if quick else "")
    out = [
        "# Benchmarks",
        "",
        "Generated by `bench/run_all.py`; do not edit by hand. Every figure sits beside its",
        "baseline measured in the same run on the same machine. Ratio = figure / baseline",
        "(for latencies, memory and start-up, lower is better and the ratio is the gateway's",
        "overhead factor). A `-` baseline marks a figure that is a state, not work a bare",
        "library could do instead: a backlog left, the console page's frame rate and updates.",
        "",
        f"Run: {now}{' (quick sizes)' if quick else ''}. Reproduce: `{cmd}`",
        "",
        "## Machine",
        "",
        *_machine(),
        (
            f"- Load average (1, 5, 15 min) at the start: {_load(load[0])}; at the end: "
            f"{_load(load[1])}. Other work shared the cores: CPU-per-unit figures are robust to "
            "that, throughput ratios less so (rounds alternate, medians reported)."
        ),
        "",
        "Each section lists, under its table, exactly what every row times. The RFID CPU shares",
        "come from py-spy on the keep-up runs (one per stream shape), when it is installed",
        "(`scripts/setup-env test,bench`).",
        "",
    ]
    missed: list[str] = []
    for name, results, note in sections:
        lines, section_missed = _section(name, results, note)
        out += lines
        missed += section_missed
    out += _missed_section(missed)
    return "\n".join(out) + "\n"


def _section(name: str, results: list[Result], note: str) -> tuple[list[str], list[str]]:
    """One bench's section (heading, table, notes) and the goals it missed."""
    out = [f"## {name} (`bench/bench_{name}.py`, {note})", ""]
    if not results:
        return [*out, f"**Not measured:** {note}.", ""], [f"{name}: not measured ({note})"]
    missed: list[str] = []
    out += [
        "| measure | figure | baseline (same run) | ratio | goal | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        verdict = {True: "PASS", False: "**MISS**", None: "-"}[r.get("pass")]
        base = r.get("baseline")
        base_txt = "-" if base is None else f"{_num(base)} {r.get('baseline_unit', '')}"
        out.append(
            f"| {r['name']} | {_num(r['value'])} {r['unit']} | {base_txt} | "
            f"{'-' if r.get('ratio') is None else r['ratio']} | {r.get('goal') or '-'} | "
            f"{verdict} |"
        )
        if r.get("pass") is False:
            missed.append(
                f"**{name}: {r['name']}**: {_num(r['value'])} {r['unit']}, goal {r.get('goal')}"
            )
    notes = [r["note"] for r in results if r.get("note")]
    out += ["", *(f"- {n}" for n in notes), ""] if notes else [""]
    return out, missed


def _missed_section(missed: list[str]) -> list[str]:
    return ["## Goals missed", "", *([f"- MISSED {m}" for m in missed] or ["None."])]


_GENERATED = re.compile(r"^## (\w+) \(`bench/bench_\1\.py`", re.MULTILINE)
_MISSED_NAME = re.compile(r"^- MISSED (?:\*\*)?(\w+):", re.MULTILINE)


def _merge(
    old: str,
    sections: list[tuple[str, list[Result], str]],
    *,
    quick: bool,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    started: dt.datetime,
) -> str:
    """`old` with the sections of the benches that ran replaced, and its missed goals redone."""
    goals_at = old.find("\n## Goals missed")
    if goals_at < 0:
        return _readme(sections, quick=quick, load=load)
    body, tail = old[: goals_at + 1], old[goals_at + 1 :]
    ended = dt.datetime.now(dt.UTC).strftime("%H:%M UTC")
    names = [name for name, _, _ in sections]
    cmd = ".venv/bin/python bench/run_all.py" + (" --quick" if quick else "")
    cmd += " --only " + " ".join(names)
    missed: list[str] = []
    for name, results, note in sections:
        lines, section_missed = _section(name, results, note)
        lines[1:1] = [
            "",
            (
                f"Measured alone: {started:%Y-%m-%d %H:%M} to {ended}"
                f"{' (quick sizes)' if quick else ''}, on the machine above; "
                f"load average (1, 5, 15 min) {_load(load[0])} at the start, {_load(load[1])} at "
                f"the end. Reproduce: `{cmd}`"
            ),
        ]
        missed += section_missed
        text = "\n".join(lines) + "\n"
        spans = {m.group(1): m.start() for m in _GENERATED.finditer(body)}
        if name in spans:
            start = spans[name]
            following = [at for at in spans.values() if at > start]
            end = min(following, default=len(body))
            body = body[:start] + text + body[end:]
        else:
            body = body + text
    # The goals missed by the sections kept from the last full run stay listed.
    goals_end = tail.find("\n<!-- ")
    kept_tail = tail[goals_end:] if goals_end >= 0 else "\n"
    for line in tail[: goals_end if goals_end >= 0 else len(tail)].splitlines():
        found = _MISSED_NAME.match(line)
        if found and found.group(1) not in names:
            missed.append(line.removeprefix("- MISSED "))
    return body + "\n".join(_missed_section(missed)) + "\n" + kept_tail


if __name__ == "__main__":
    raise SystemExit(main())
