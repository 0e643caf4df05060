"""The RFID bench's portal: a busy receiving door as a simulator scenario, and probes of the daemon.

`busy_portal` plays pallets crossing outside (1, 2) -> inside (3, 4) back to back, a few hundred
tags in view at once, plus strays parked inside; `per_tag_rate` finds the per-tag read rate that
offers a given number of reads per second over the whole scenario (the bench serves it with the
tests' `SimulatorThread`); `JournalProbe` and `thread_cpu_s` read the daemon from outside (its
SQLite file read-only, /proc).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.readers.llrp.scenario import Pass, Scenario, ScenarioTag, sgtin96_hex  # noqa: E402

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_STRAY_READS_PER_S = 1.0


def busy_portal(
    *,
    duration_s: float,
    items_per_pallet: int,
    pallet_every_s: float,
    reads_per_s: float,
    strays: int,
) -> Scenario:
    """Pallets crossing outside (1, 2) -> inside (3, 4) back to back, strays parked inside."""
    tags: list[ScenarioTag] = []
    serial = 1
    t0 = 1.0
    while t0 + 4.0 < duration_s:
        for i in range(items_per_pallet):
            jitter = (i % 20) * 0.02
            start = t0 + jitter
            tags.append(
                ScenarioTag(
                    sgtin96_hex("0614141", "812345", serial),
                    (
                        Pass(start, start + 2.0, (1, 2), -50.0 - i % 10, reads_per_s),
                        Pass(start + 1.8, start + 3.8, (3, 4), -52.0 - i % 10, reads_per_s),
                    ),
                    "pallet",
                )
            )
            serial += 1
        t0 += pallet_every_s
    tags.extend(
        ScenarioTag(
            sgtin96_hex("4012345", "100001", 900_000 + k),
            (Pass(0.0, duration_s, (3,), -72.0, _STRAY_READS_PER_S),),
            "stray",
        )
        for k in range(strays)
    )
    return Scenario(
        "busy-portal", duration_s, tuple(tags), (), {"outside": (1, 2), "inside": (3, 4)}
    )


def scenario_reads(scenario: Scenario) -> int:
    """Every read the simulator will send over the whole scenario (one per tag, antenna, read)."""
    return sum(
        p.reads_between(0.0, scenario.duration_s) * len(p.antennas)
        for tag in scenario.tags
        for p in tag.passes
    )


def per_tag_rate(
    offered_reads_per_s: float,
    *,
    duration_s: float,
    items_per_pallet: int,
    pallet_every_s: float,
    strays: int,
) -> float:
    """The per-tag, per-antenna read rate at which `busy_portal` offers that many reads/s.

    Averaged over the whole scenario, the quiet first second and last few seconds included.
    """

    def door(reads_per_s: float) -> Scenario:
        return busy_portal(
            duration_s=duration_s,
            items_per_pallet=items_per_pallet,
            pallet_every_s=pallet_every_s,
            reads_per_s=reads_per_s,
            strays=strays,
        )

    strays_only = scenario_reads(door(0.0))
    wanted = offered_reads_per_s * duration_s - strays_only
    if wanted <= 0:
        return 0.0
    # Reads are whole per pass and antenna, so the total is only nearly linear in the rate.
    rate = 10.0
    for _ in range(4):
        pallets = scenario_reads(door(rate)) - strays_only
        if pallets <= 0:
            raise ValueError("the scenario is too short for a single pallet")
        rate *= wanted / pallets
    return rate


def thread_cpu_s(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each thread of process `pid`, by thread id."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return out


class JournalProbe:
    """Reads the daemon's SQLite file read-only: reads journaled, last id, pipeline cursor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reads = 0
        self.last_id = 0
        self.cursor = 0

    def sample(self) -> None:
        """Bring the figures up to date (incrementally: only rows past the last sample)."""
        if not self.path.exists():
            return
        conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute(
                "SELECT coalesce(sum(count), 0), coalesce(max(id), 0) FROM journal"
                " WHERE id > ? AND kind = 0",
                (self.last_id,),
            ).fetchone()
            self.reads += int(rows[0])
            self.last_id = max(self.last_id, int(rows[1]))
            self.cursor = int(conn.execute("SELECT cursor FROM checkpoint").fetchone()[0])
        except sqlite3.OperationalError:
            return  # the schema is not there yet
        finally:
            conn.close()
