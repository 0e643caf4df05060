"""RFID read path throughput: sllurp's bare decode vs decode + mapping to TagReads, same bytes.

Fed from recorded RO_ACCESS_REPORT frames (LTK dx101_c: 32,705 tags in 3.5 MB). Prints JSON.
`--quick` leaves out the largest frames. The lead extends `pipeline` stages (smoothing, identity
decoding, journal) in `run_stages`; the baseline is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sllurp.llrp import LLRPMessage

from gateway.readers.llrp import frames as f
from gateway.readers.llrp.mapping import map_report, map_tag
from gateway.readers.llrp.scenario import sgtin96_hex
from gateway.readers.llrp.simulator import replay_frames
from gateway.readers.llrp.tag_reports import decode_tag_reports

ROOT = Path(__file__).resolve().parent.parent
DX101_C = ROOT.parent / "shared" / "conformance" / "llrp" / "ltk" / "dx101_c.bin"


def decode(frames: list[bytes]) -> list[dict[str, Any]]:
    """sllurp's decode of every RO_ACCESS_REPORT: the tag dicts."""
    tags: list[dict[str, Any]] = []
    for frame in frames:
        msg = LLRPMessage(msgbytes=frame)
        if msg.getName() == "RO_ACCESS_REPORT":
            tags.extend(msg.msgdict["RO_ACCESS_REPORT"]["TagReportData"])
    return tags


def decode_and_map(frames: list[bytes]) -> int:
    """Decode, then map each tag as the driver does; returns TagReads made."""
    now_s = time.time()
    made = 0
    for tag in decode(frames):
        if tag.get("EPC"):
            map_tag(tag, reader="r", station="s", received_at_s=now_s)
            made += 1
    return made


def portal_frames(reads: int) -> list[bytes]:
    """RO_ACCESS_REPORTs of 64 tags each, every field, as the simulator sends a busy portal."""
    sel = f.ContentSelector()
    out: list[bytes] = []
    t0_us = int(time.time() * 1e6)
    for start in range(0, reads, 64):
        tags = [
            f.TagReport(
                bytes.fromhex(sgtin96_hex("0614141", "812345", 1 + (start + k) % 250)),
                1 + (start + k) % 4,
                -50 - k % 10,
                1 + k % 4,
                t0_us + 1000 * (start + k),
                t0_us + 1000 * (start + k),
            )
            for k in range(min(64, reads - start))
        ]
        out.append(f.ro_access_report(start, tags, sel, 1))
    return out


def lean_decode_and_map(frames: list[bytes]) -> int:
    """The driver's lean path: decode, map and collapse each report; returns TagReads made."""
    now_s = time.time()
    made = 0
    for frame in frames:
        tags = decode_tag_reports(frame)
        if tags is not None:
            made += len(map_report(tags, reader="r", station="s", received_at_s=now_s).reads)
    return made


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Fastest wall time of `repeat` runs."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    """Run the benchmark and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a slice of the frames, one run")
    parser.add_argument("--path", type=Path, default=DX101_C)
    args = parser.parse_args()
    frames = [f for f in replay_frames(args.path) if (f[0] << 8 | f[1]) & 0x3FF == 61]
    if args.quick:
        frames = [f for f in frames if len(f) < 200_000]  # dx101_c: drops the 3 reports >500 kB
    repeat = 1 if args.quick else 3
    tags = len(decode(frames))
    mapped = decode_and_map(frames)
    t_decode = best_of(lambda: decode(frames), repeat)
    t_map = best_of(lambda: decode_and_map(frames), repeat)
    decoded = [t for t in decode(frames) if t.get("EPC")]
    now_s = time.time()
    t_map_only = best_of(
        lambda: [map_tag(t, reader="r", station="s", received_at_s=now_s) for t in decoded],
        repeat,
    )
    portal = portal_frames(20_000 if args.quick else 100_000)
    portal_reads = sum(len(decode_tag_reports(f) or ()) for f in portal)
    t_sllurp, t_lean = [], []
    for _ in range(3):  # alternated: baseline, lean, baseline, lean, ...
        t_sllurp.append(best_of(lambda: decode_and_map(portal), 1))
        t_lean.append(best_of(lambda: lean_decode_and_map(portal), 1))
    lean_rate = portal_reads / statistics.median(t_lean)
    sllurp_rate = portal_reads / statistics.median(t_sllurp)
    print(
        json.dumps(
            {
                "results": [
                    {
                        "name": f"lean decode + map_report, portal ({portal_reads:,} reads)",
                        "value": round(lean_rate),
                        "unit": "reads/s",
                        "baseline": round(sllurp_rate),
                        "baseline_unit": "reads/s sllurp decode + map_tag",
                        "ratio": round(lean_rate / sllurp_rate, 3),
                        "goal": "info",
                        "pass": None,
                        "note": (
                            "rfid decode: RO_ACCESS_REPORTs of 64 tags with every field, as the "
                            "simulator sends a busy portal; the driver's lean path (decode, map, "
                            "collapse) vs sllurp's decoder + the per-dict mapping it replaced, "
                            "in this process, no I/O; medians of 3 alternated rounds"
                        ),
                    },
                    {
                        "name": f"sllurp decode + mapping ({args.path.name}, {tags:,} reads)",
                        "value": round(tags / t_map),
                        "unit": "reads/s",
                        "baseline": round(tags / t_decode),
                        "baseline_unit": "reads/s bare sllurp decode",
                        "ratio": round(t_decode / t_map, 3),
                        "goal": "info",
                        "pass": None,
                        "note": (
                            f"rfid recorded: {args.path.name}'s frames (OpSpec results in the "
                            "largest: those stay with sllurp), best of runs"
                        ),
                    },
                ],
                "bench": "rfid_read_path",
                "input": args.path.name,
                "frames": len(frames),
                "tags": tags,
                "reads_mapped": mapped,
                "sllurp_decode_reads_per_s": round(tags / t_decode),
                "decode_plus_mapping_reads_per_s": round(tags / t_map),
                "mapping_only_reads_per_s": round(len(decoded) / t_map_only),
                "repeat": repeat,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
