"""Pallets cross a portal while the daemon is frozen or starved: the same receipts, no read lost.

The reader is llrpkit's LLRP emulator (written by others, one tag per RO_ACCESS_REPORT, stamped
with the reader's own clock), on its own loop in this process; the daemon is `gateway run` in a
subprocess, so SIGSTOP or a CPU hog stops only the daemon while the reader keeps reading and its
reports wait in the socket. A daemon that closed visits on the wall clock found each pallet's
visits over when it woke (1 receipt from 30 items); visits must close only on time heard.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llrpkit.emulator.core import EmulatedTag, LLRPEmulator

from gateway.readers.llrp.scenario import sgtin96_hex
from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, buffer_stats
from tests.support.llrpkit import CountingEmulator
from tests.support.own_loop import ServedInThread
from tests.support.portal import portal_config
from tests.support.wms import Collector

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
ABSENT_S = 2.0
FREEZE_S = 2 * ABSENT_S
PALLETS = 3
ITEMS = 10
OUTSIDE_S = 1.5  # each pallet is seen by the outside antennas, then by the inside ones
INSIDE_S = 1.5
FIRST_PALLET_S = 3.0
PALLET_EVERY_S = 9.0
IN_DOORWAY_S = 0.7  # the freeze starts this long after the pallet entered the field


class Door(ServedInThread[LLRPEmulator]):
    """The emulator on its own loop in a thread; pallets move through its field on cue."""

    def __init__(self) -> None:
        self.emulator = CountingEmulator(tags=[], reads_per_sec=400.0, seed=7)
        super().__init__(self.emulator, name="llrpkit-emulator")

    def show(self, tags: list[EmulatedTag]) -> None:
        """Put exactly these tags in the field now (the emulator reads its list each read)."""
        self.call_soon(setattr, self.emulator, "tags", tags)


def _pallet_epcs(pallet: int) -> list[str]:
    return [sgtin96_hex("0614141", "812345", 1000 * (pallet + 1) + i) for i in range(ITEMS)]


def _field(epcs: list[str], antennas: tuple[int, ...]) -> list[EmulatedTag]:
    return [EmulatedTag(bytes.fromhex(epc), antennas, -50.0) for epc in epcs]


def _config(tmp_path: Path, broker: Mosquitto, port: int) -> Path:
    # One tag per report (N = 1), as llrpkit's emulator sends and many integrations ask.
    return portal_config(
        tmp_path,
        broker.port,
        port,
        tag_population=16,
        report_every_n_tags=1,
        keepalive_s=1.0,
        absent_s=ABSENT_S,
    )


def _spin(stop: Any) -> None:
    while not stop.is_set():
        pass


@contextlib.contextmanager
def _starved(pid: int) -> Iterator[None]:
    """Every thread of `pid` on CPU 0 under SCHED_IDLE, beside two busy processes there."""
    tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    before = {tid: os.sched_getaffinity(tid) for tid in tids}
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(2)]
    for hog in hogs:
        hog.start()
        assert hog.pid is not None
        os.sched_setaffinity(hog.pid, {0})
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, {0})
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    try:
        yield
    finally:
        for tid, cpus in before.items():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                os.sched_setaffinity(tid, cpus)
        stop.set()
        for hog in hogs:
            hog.join(5)


@contextlib.contextmanager
def _frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _receipts(collector: Collector) -> list[dict[str, Any]]:
    return [m for m in (r.json() for r in collector.received()) if m["type"] == "receipt"]


@pytest.mark.parametrize("trouble", ["none", "sigstop", "cpu-hog"])
def test_pallets_in_the_doorway_survive_a_frozen_daemon(
    tmp_path: Path, broker: Mosquitto, trouble: str
) -> None:
    door = Door()
    with (
        door,
        Collector(broker.port, [f"{BASE}/movements"]) as collector,
    ):
        config = _config(tmp_path, broker, door.emulator.port)
        with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
            daemon.wait_for_log("reader_inventorying", 30)
            assert daemon.proc is not None
            start = time.monotonic()
            for pallet in range(PALLETS):
                t0 = FIRST_PALLET_S + pallet * PALLET_EVERY_S
                epcs = _pallet_epcs(pallet)
                _sleep_until(start + t0)
                door.show(_field(epcs, (1, 2)))
                _sleep_until(start + t0 + IN_DOORWAY_S)
                hold: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
                if trouble == "sigstop":
                    hold = _frozen(daemon.proc.pid)
                elif trouble == "cpu-hog":
                    hold = _starved(daemon.proc.pid)
                with hold:
                    _sleep_until(start + t0 + OUTSIDE_S)
                    door.show(_field(epcs, (3, 4)))
                    _sleep_until(start + t0 + OUTSIDE_S + INSIDE_S)
                    door.show([])
                    _sleep_until(start + t0 + IN_DOORWAY_S + FREEZE_S)
            collector.wait_for(
                lambda c: len(_receipts(c)) >= PALLETS * ITEMS, 30, f"{PALLETS * ITEMS} receipts"
            )
            # Any late, wrong movement (a second receipt, a split visit) would come by now.
            time.sleep(ABSENT_S + 1.0)
            receipts = _receipts(collector)
            movements = [r.json() for r in collector.received()]
            assert daemon.alive()
            events = daemon.log_events()
        sent = door.emulator.reads_sent
    journaled = buffer_stats(config)["journal_last_id"]
    wanted = {epc for pallet in range(PALLETS) for epc in _pallet_epcs(pallet)}
    got = [r["item"]["epc"].rsplit(".", 1)[-1] for r in receipts]
    assert len(receipts) == PALLETS * ITEMS, (len(receipts), [m["type"] for m in movements])
    assert len(set(got)) == PALLETS * ITEMS, "one receipt per item"
    assert {int(epc[-10:], 16) & ((1 << 38) - 1) for epc in wanted} == {int(s) for s in got}
    assert all(r["direction"] == "in" for r in receipts)
    assert not [e for e in events if e.get("event") in ("reads_dropped", "reader_silent")]
    assert journaled == sent, f"the reader sent {sent} reads, the journal holds {journaled}"


def _sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))
