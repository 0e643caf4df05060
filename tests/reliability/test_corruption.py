"""A buffer file damaged on disk between runs: moved aside (kept), reported loudly, fresh start."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, buffer_stats, wait_until, write_config
from tests.support.scans import scan_events, write_jsonl
from tests.support.wms import Collector

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
BUFFER_FILE = "buffer.sqlite3"
FIRST_RUN = 300
SECOND_RUN = 40
SECOND_START = 10_000
PAGE_BYTES = 4096


def _garbage_in_the_middle(path: Path) -> None:
    # Every page after the header page up to the middle: b-tree pages the integrity check reads.
    size = path.stat().st_size
    assert size >= 3 * PAGE_BYTES, f"buffer too small to damage its middle: {size} bytes"
    rng = random.Random(3)
    with path.open("r+b") as handle:
        handle.seek(PAGE_BYTES)
        handle.write(rng.randbytes(max(size // 2 - PAGE_BYTES, PAGE_BYTES)))


def _truncated(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 3 + 100)


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"this is a shopping list, not a database\n" * 200)


@pytest.mark.parametrize(
    "damage",
    [_garbage_in_the_middle, _truncated, _not_sqlite],
    ids=["garbage-pages", "truncated", "not-sqlite"],
)
def test_corrupt_buffer_is_moved_aside_and_daemon_starts_fresh(
    tmp_path: Path, broker: Mosquitto, damage: Callable[[Path], None]
) -> None:
    state = tmp_path / "state"
    replay = tmp_path / "events.jsonl"
    write_jsonl(replay, scan_events(FIRST_RUN))
    config = write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=state,
        stations=[{"id": "door-3", "kind": "receiving"}],
        readers=[{"kind": "replay", "id": "replay-1", "station": "door-3", "file": str(replay)}],
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    with Collector(broker.port, [f"{BASE}/movements"]) as collector:
        daemon.start()
        try:
            daemon.wait_for_log("replay_finished", timeout_s=60)  # fails with the log tail
            collector.wait_for(lambda c: len(c.distinct_ids()) >= FIRST_RUN, 60, "first run")
            assert daemon.terminate() == 0
        finally:
            if daemon.alive():
                daemon.kill()
        buffer = state / BUFFER_FILE
        for suffix in ("-wal", "-shm"):
            # A clean stop checkpoints; a leftover WAL would hide the damage we make.
            (state / (BUFFER_FILE + suffix)).unlink(missing_ok=True)
        damage(buffer)
        damaged = buffer.read_bytes()

        # Second run: new input only, so what arrives now comes from the fresh buffer.
        write_jsonl(replay, scan_events(SECOND_RUN, start=SECOND_START))
        before = len(collector.received())
        daemon.start()
        try:
            moved = daemon.wait_for_log("buffer_corrupt_moved_aside", timeout_s=30)
            fresh = daemon.wait_for_log("buffer_was_corrupt_started_fresh", timeout_s=30)
            assert moved[0]["level"] == "error"
            assert fresh[0]["level"] == "error"
            aside = [
                p
                for p in sorted(state.glob(BUFFER_FILE + ".corrupt-*"))
                if not p.name.endswith(("-wal", "-shm"))  # its SQLite sidecars travel with it
            ]
            assert len(aside) == 1, f"expected one moved-aside file, found {aside}"
            assert aside[0].read_bytes() == damaged, "the damaged file must be kept as it was"
            assert str(aside[0]) == fresh[0]["moved_to"]

            collector.wait_for(
                lambda c: len(c.received()) - before >= SECOND_RUN, 60, "second-run movements"
            )
            serials = {m.json()["item"]["serial"] for m in collector.received()[before:]}
            assert serials == {f"{SECOND_START + i:08d}" for i in range(SECOND_RUN)}
            wait_until(lambda: buffer_stats(config)["pending"] == 0, 30, "fresh buffer drained")
            stats = buffer_stats(config)
            assert stats["last_seq"] == SECOND_RUN, "the fresh buffer starts its seq at 1"
            assert daemon.alive()
            assert daemon.terminate() == 0
        finally:
            if daemon.alive():
                daemon.kill()
