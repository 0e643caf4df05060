"""The pipeline's cache of just-journaled events answers exactly as the journal on disk does."""

from __future__ import annotations

import random
from pathlib import Path

from gateway.buffer.store import Buffer
from gateway.daemon.recent import RecentJournal
from gateway.domain.events import BarcodeScan, RawEvent, TagRead

BIG = 64 * 1024 * 1024


def event(i: int) -> RawEvent:
    if i % 7 == 0:
        return BarcodeScan("hand", "st-2", f"RMA-{i:08d}", float(i), device="hs-1")
    epc = f"3074257BF7194E40{i:08X}"
    return TagRead("door", "st-1", epc, 1 + i % 4, i + 0.25, rssi_dbm=-50.5, read_count=2)


async def test_every_take_equals_the_journal_read_it_replaces(tmp_path: Path) -> None:
    rng = random.Random(7)
    cache = RecentJournal(max_events=300)
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    try:
        made = 0
        cursor = 0
        taken_here = read_from_disk = 0
        for _ in range(200):
            batch = [event(made + k) for k in range(rng.randint(1, 40))]
            made += len(batch)
            last_id = await buffer.append_raw(batch)
            cache.add(last_id - len(batch) + 1, batch)
            # The pipeline takes what it can, sometimes falling behind by more than is kept.
            if rng.random() < 0.7:
                limit = rng.choice([1, 5, 50, 2000])
                rows, complete = cache.take(cursor, limit)
                on_disk = await buffer.read_raw(cursor, limit)
                if rows:
                    taken_here += 1
                    assert rows == on_disk[: len(rows)]
                    cursor = rows[-1][0]
                    # "complete" means the journal has nothing past what was taken.
                    assert complete == (await buffer.read_raw(cursor, 1) == [])
                else:
                    # Nothing here: either the pipeline is caught up or the rows were dropped.
                    assert not on_disk or not complete
                    if on_disk:
                        read_from_disk += 1
                        cursor = on_disk[-1][0]
            assert len(cache) <= 300
        assert made == (await buffer.stats()).journal_last_id
        # Both paths were exercised.
        assert taken_here > 50
        assert read_from_disk > 5
    finally:
        await buffer.close()


def test_a_hole_sends_the_pipeline_to_the_journal() -> None:
    cache = RecentJournal(max_events=5)
    cache.add(1, [event(1), event(2), event(3)])
    cache.add(4, [event(4), event(5), event(6)])  # ids 1-3 are dropped: only 5 are kept
    assert len(cache) == 3
    assert cache.take(0, 100) == ([], False)
    assert cache.take(3, 2) == ([(4, event(4)), (5, event(5))], False)
    assert cache.take(5, 100) == ([(6, event(6))], True)
    assert cache.take(6, 100) == ([], True)
    assert len(cache) == 0  # what the pipeline passed is let go
    cache.add(10, [event(10)])  # rows 7-9 were journaled elsewhere (another process)
    assert cache.take(6, 100) == ([], False)
