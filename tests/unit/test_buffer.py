"""The SQLite buffer on real files: journal, outbox, checkpoint, budget, corruption, crashes."""

from __future__ import annotations

import ast
import itertools
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.buffer import files
from gateway.buffer.store import (
    JOURNAL_ROW_OVERHEAD_B,
    OUTBOX_ROW_OVERHEAD_B,
    Buffer,
    Gap,
    OutboxRow,
)
from gateway.domain.events import BarcodeScan, RawEvent, TagRead
from gateway.domain.movements import Evidence, Item, Movement
from gateway.errors import BufferUnavailable, OutboxFull
from tests.fixtures import make_v1_buffer as v1
from tests.support.clock import FakeClock

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "gateway" / "buffer" / "migrations"
BIG = 64 * 1024 * 1024
EPC = "3074257BF7194E4000001A85"


def tag(i: int, *, at_s: float | None = None) -> TagRead:
    return TagRead(reader="r", station="s", epc_hex=EPC, antenna=1, at_s=at_s or float(i))


def movement(name: str) -> Movement:
    return Movement(
        id=name,
        type="receipt",
        occurred_at_s=1.0,
        station="s",
        item=Item(code=name),
        evidence=Evidence(source="barcode", reader="r", first_seen_s=1.0, last_seen_s=1.0),
    )


def render(m: Movement, seq: int) -> bytes:
    return f"{m.id}@{seq}".encode()


def render_100(m: Movement, seq: int) -> bytes:
    return b"x" * 100


async def assert_counters_match_rows(buffer: Buffer) -> None:
    """The O(1) counters agree with a full recount of the rows (test-only scan)."""
    stats = await buffer.stats()
    conn = sqlite3.connect(f"{buffer.path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        journal_rows, journal_b = conn.execute(
            "SELECT count(*), coalesce(sum(size_b), 0) FROM journal"
        ).fetchone()
        outbox_rows, outbox_b, pending = conn.execute(
            "SELECT count(*), coalesce(sum(size_b), 0), coalesce(sum(delivered = 0), 0) FROM outbox"
        ).fetchone()
    finally:
        conn.close()
    assert (stats.journal_rows, stats.outbox_rows, stats.pending) == (
        journal_rows,
        outbox_rows,
        pending,
    )
    assert stats.used_bytes == journal_b + outbox_b


def migration_count() -> int:
    return len([p for p in MIGRATIONS.iterdir() if re.match(r"^\d{4}_[a-z0-9_]+\.sql$", p.name)])


# -- schema --------------------------------------------------------------------------------------


async def test_new_file_is_migrated_once_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"

    with capture_logs() as logs:
        for _ in range(2):
            buffer = await Buffer.open(path, max_bytes=BIG)
            await buffer.close()
    events = [str(entry["event"]) for entry in logs]
    assert events.count("buffer_migrated") == 1
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == migration_count()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"journal", "outbox", "gaps", "counters", "checkpoint", "kv"} <= tables


async def test_file_from_a_newer_gateway_is_refused_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()

    with pytest.raises(BufferUnavailable, match="newer"):
        await Buffer.open(path, max_bytes=BIG)
    assert path.exists()
    assert not list(tmp_path.glob("*.corrupt-*"))


def _v1_event(row: tuple[Any, ...]) -> RawEvent:
    """What a version-1 journal row means, spelled out here independently of the buffer's code."""
    _, kind, reader, station, at_s, data, antenna, rssi, count, channel, device = row
    if kind == 0:
        return TagRead(reader, station, data, antenna, at_s, rssi, count, channel)
    return BarcodeScan(reader, station, data, at_s, device)


async def test_file_from_the_first_schema_version_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite3"
    shutil.copyfile(v1.FIXTURE, path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        conn.close()

    with capture_logs() as logs:
        buffer = await Buffer.open(path, max_bytes=BIG, clock=FakeClock(v1.T0_S + 60.0))
    try:
        migrated = [e for e in logs if e["event"] == "buffer_migrated"]
        assert [(e["from_version"], e["to_version"]) for e in migrated] == (
            [(1, migration_count())] if migration_count() > 1 else []
        )
        assert buffer.corrupt_moved_to is None
        assert await buffer.read_raw(0, 100) == [(row[0], _v1_event(row)) for row in v1.JOURNAL]
        assert await buffer.load_checkpoint() == (v1.CURSOR, v1.PIPELINE_STATE)
        assert await buffer.rows_from(0, 100) == [
            OutboxRow(seq, mid, v1.payload(seq, mid, at_s), at_s, bool(delivered))
            for seq, mid, at_s, delivered in v1.OUTBOX
        ]
        undelivered = [seq for seq, _, _, delivered in v1.OUTBOX if not delivered]
        assert [row.seq for row in await buffer.pending(0, 100)] == undelivered
        assert await buffer.unreported_gaps() == [
            Gap(gap[0], gap[1], gap[2], gap[3], gap[4]) for gap in v1.GAPS if not gap[6]
        ]
        for key, value in v1.KV.items():
            assert await buffer.kv_get(key) == value
        stats = await buffer.stats()
        assert (stats.journal_last_id, stats.cursor, stats.last_seq) == (10, 5, 7)
        assert (stats.pending, stats.delivered_total, stats.gaps_total) == (3, 4, 2)
        assert stats.refused_events_total == 15
        await assert_counters_match_rows(buffer)
        # The upgraded file goes on where version 1 stopped: ids and seqs are not reused,
        # an old id still dedupes, the old pending rows are delivered like new ones.
        assert await buffer.append_raw([tag(1)]) == v1.JOURNAL_LAST_ID + 1
        seqs = await buffer.commit_pipeline(
            [movement("mv-0004"), movement("mv-0008")], cursor=11, state=None, render=render
        )
        assert seqs == [v1.LAST_SEQ + 1]
        assert await buffer.mark_delivered_ids(["mv-0004"]) == 1
        assert [row.seq for row in await buffer.pending(0, 100)] == [6, 7, 8]
        await assert_counters_match_rows(buffer)
    finally:
        await buffer.close()


# -- journal -------------------------------------------------------------------------------------


async def test_append_and_read_round_trip_both_kinds(tmp_path: Path) -> None:
    events: list[RawEvent] = [
        TagRead("door", "st-1", EPC, 3, 10.5, rssi_dbm=-51.5, read_count=4, channel=12),
        TagRead("door", "st-1", EPC, 1, 11.0),
        BarcodeScan("hand", "st-2", "]C1\x1d0180614141123458", 12.25, device="hs-7"),
        BarcodeScan("hand", "st-2", "RMA-00012é", 13.0),
    ]

    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    try:
        assert await buffer.append_raw([]) == 0
        assert await buffer.append_raw(events[:1]) == 1
        assert await buffer.append_raw(events[1:]) == 4
        assert await buffer.read_raw(0, 100) == list(enumerate(events, start=1))
        assert await buffer.read_raw(2, 1) == [(3, events[2])]
        assert await buffer.read_raw(4, 10) == []
        exported = [item async for item in buffer.export_raw(1)]
        assert exported == list(enumerate(events, start=1))[1:]
        stats = await buffer.stats()
        assert (stats.journal_rows, stats.journal_last_id) == (4, 4)
    finally:
        await buffer.close()


async def test_journal_ids_never_reused_after_eviction_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    row_b = JOURNAL_ROW_OVERHEAD_B + 2 + len(EPC)

    buffer = await Buffer.open(path, max_bytes=row_b * 10)
    try:
        await buffer.append_raw([tag(i) for i in range(10)])
        await buffer.commit_pipeline([], cursor=10, state=None, render=render)
        # Every row is consumed, so all may go; the next id must still be 11.
        assert await buffer.append_raw([tag(i) for i in range(10)]) == 20
        await buffer.commit_pipeline([], cursor=20, state=None, render=render)
    finally:
        await buffer.close()
    buffer = await Buffer.open(path, max_bytes=row_b * 10)
    try:
        assert await buffer.append_raw([tag(1)]) == 21
        assert [i for i, _ in await buffer.read_raw(20, 100)] == [21]
    finally:
        await buffer.close()


# -- outbox --------------------------------------------------------------------------------------


async def test_commit_dedupes_by_id_and_assigns_contiguous_seqs(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    try:
        a, b, c = movement("a"), movement("b"), movement("c")
        assert await buffer.commit_pipeline([a, b, a], cursor=0, state=None, render=render) == [
            1,
            2,
        ]
        # A movement re-derived after a crash has the same id: skipped, no seq.
        assert await buffer.commit_pipeline([b, c], cursor=0, state=None, render=render) == [3]
        assert await buffer.commit_pipeline([a], cursor=0, state=None, render=render) == []
        rows = await buffer.pending(0, 10)
        assert [(r.seq, r.id, r.payload) for r in rows] == [
            (1, "a", b"a@1"),
            (2, "b", b"b@2"),
            (3, "c", b"c@3"),
        ]
        assert await buffer.pending(1, 1) == rows[1:2]
        stats = await buffer.stats()
        assert (stats.last_seq, stats.outbox_rows, stats.pending) == (3, 3, 3)
        assert stats.oldest_pending_seq == 1
    finally:
        await buffer.close()


async def test_a_failing_render_rolls_back_the_whole_commit(tmp_path: Path) -> None:
    def broken(m: Movement, seq: int) -> bytes:
        if m.id == "b":
            raise ValueError("render failed")
        return b"ok"

    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    try:
        with pytest.raises(ValueError, match="render failed"):
            await buffer.commit_pipeline(
                [movement("a"), movement("b")], cursor=7, state=b"s", render=broken
            )
        assert await buffer.load_checkpoint() == (0, None)
        assert await buffer.pending(0, 10) == []
        assert await buffer.commit_pipeline(
            [movement("a")], cursor=1, state=None, render=render
        ) == [1]
    finally:
        await buffer.close()


async def test_checkpoint_kv_and_counters_survive_close_and_open(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"

    buffer = await Buffer.open(path, max_bytes=BIG)
    try:
        assert await buffer.load_checkpoint() == (0, None)
        assert await buffer.kv_get("k") is None
        await buffer.append_raw([tag(i) for i in range(5)])
        await buffer.commit_pipeline(
            [movement("a"), movement("b")], cursor=5, state=b'{"x":1}', render=render
        )
        await buffer.kv_put("k", b"one")
        await buffer.kv_put("k", b"two")
        before = await buffer.stats()
    finally:
        await buffer.close()
    buffer = await Buffer.open(path, max_bytes=BIG)
    try:
        assert await buffer.load_checkpoint() == (5, b'{"x":1}')
        assert await buffer.kv_get("k") == b"two"
        after = await buffer.stats()
        assert after.used_bytes == before.used_bytes > 0
        assert (after.cursor, after.last_seq, after.pending) == (5, 2, 2)
        assert await buffer.commit_pipeline(
            [movement("c")], cursor=5, state=None, render=render
        ) == [3]
    finally:
        await buffer.close()


async def test_mark_delivered_by_seqs_ids_and_upto(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    try:
        names = [f"m{i}" for i in range(1, 9)]
        await buffer.commit_pipeline(
            [movement(n) for n in names], cursor=0, state=None, render=render
        )
        assert await buffer.mark_delivered([2, 3, 99]) == 2
        assert await buffer.mark_delivered([2]) == 0
        assert await buffer.mark_delivered([]) == 0
        assert await buffer.mark_delivered_ids(["m5", "m3", "nope"]) == 1
        assert await buffer.mark_delivered_upto(4) == 2  # 1 and 4; 2 and 3 were done
        assert [r.seq for r in await buffer.pending(0, 100)] == [6, 7, 8]
        everything = await buffer.rows_from(0, 100)
        assert [r.delivered for r in everything] == [True] * 5 + [False] * 3
        assert [r.seq for r in await buffer.rows_from(7, 100)] == [7, 8]
        assert [r.seq for r in await buffer.rows_from(0, 100, include_delivered=False)] == [
            6,
            7,
            8,
        ]
        stats = await buffer.stats()
        assert (stats.pending, stats.delivered_total, stats.oldest_pending_seq) == (3, 5, 6)
        assert await buffer.mark_delivered_upto(100) == 3
        stats = await buffer.stats()
        assert (stats.pending, stats.oldest_pending_seq, stats.oldest_pending_age_s) == (
            0,
            None,
            None,
        )
    finally:
        await buffer.close()


async def test_rows_between_export_and_prune_by_creation_time(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)

    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG, clock=clock)
    try:
        for i in range(5):
            clock.now_s = 1000.0 + 10 * i
            await buffer.commit_pipeline([movement(f"m{i}")], cursor=0, state=None, render=render)
        between = await buffer.rows_between(1010.0, 1030.0, 100)
        assert [r.id for r in between] == ["m1", "m2", "m3"]
        assert [r.created_at_s for r in between] == [1010.0, 1020.0, 1030.0]
        assert [r.seq async for r in buffer.export_movements(2)] == [2, 3, 4, 5]
        await buffer.mark_delivered([1, 2, 4])
        # Only delivered rows older than the cutoff go; m3 (seq 4) is newer, m2 is pending.
        assert await buffer.prune_delivered(1025.0) == 2
        assert [r.seq for r in await buffer.rows_from(0, 100)] == [3, 4, 5]
        stats = await buffer.stats()
        assert stats.outbox_rows == 3
        assert stats.pending == 2
        await assert_counters_match_rows(buffer)
        clock.now_s = 1100.0
        assert stats.oldest_pending_seq == 3
        assert (await buffer.stats()).oldest_pending_age_s == pytest.approx(80.0)
    finally:
        await buffer.close()


# -- byte budget ---------------------------------------------------------------------------------


async def test_budget_evicts_consumed_journal_then_delivered_never_pending(tmp_path: Path) -> None:
    row_b = JOURNAL_ROW_OVERHEAD_B + len("r") + len("s") + len(EPC)
    move_b = OUTBOX_ROW_OVERHEAD_B + 100 + 2
    budget = 24 * row_b

    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=budget)
    try:
        await buffer.append_raw([tag(i) for i in range(1, 11)])
        await buffer.commit_pipeline(
            [movement("m1"), movement("m2")], cursor=5, state=None, render=render_100
        )
        assert (await buffer.stats()).used_bytes == 10 * row_b + 2 * move_b
        await buffer.append_raw([tag(i) for i in range(11, 16)])
        used = (await buffer.stats()).used_bytes
        assert used == 15 * row_b + 2 * move_b
        # Over budget with 5 more rows: only consumed journal rows go, oldest first.
        await buffer.append_raw([tag(i) for i in range(16, 21)])
        stats = await buffer.stats()
        assert stats.used_bytes <= budget
        first = (await buffer.read_raw(0, 1))[0][0]
        assert 1 < first <= 6
        assert stats.outbox_rows == 2
        assert stats.journal_rows == 20 - (first - 1)
        # With m1 delivered: consumed journal rows go, then m1; m2 (pending) stays.
        await buffer.mark_delivered_ids(["m1"])
        await buffer.append_raw([tag(i) for i in range(21, 26)])
        assert (await buffer.read_raw(0, 1))[0][0] == 6  # unconsumed rows are all kept
        assert [r.id for r in await buffer.rows_from(0, 10)] == ["m2"]
        stats = await buffer.stats()
        assert stats.used_bytes <= budget
        # Nothing left to free: the batch is refused and a gap recorded.
        before = stats.used_bytes
        with pytest.raises(OutboxFull) as refused:
            await buffer.append_raw([tag(100, at_s=500.0)] * 5)
        assert refused.value.budget_bytes == budget
        assert refused.value.needed_bytes == 5 * row_b
        with pytest.raises(OutboxFull):
            await buffer.append_raw([tag(0, at_s=400.0)] * 3)
        stats = await buffer.stats()
        assert stats.used_bytes <= before + 5 * row_b
        assert (stats.gaps_total, stats.pending) == (1, 1)
        gaps = await buffer.unreported_gaps()
        assert len(gaps) == 1
        gap = gaps[0]
        assert gap.refused_events == stats.refused_events_total >= 8
        assert gap.first_at_s == 400.0
        assert gap.last_at_s == 500.0
        assert gap.reason == "buffer_full"
        # A gap handed to the pipeline no longer grows: the next refusal opens another.
        with pytest.raises(OutboxFull):
            await buffer.append_raw([tag(0, at_s=600.0)])
        assert [g.refused_events for g in await buffer.unreported_gaps()] == [
            gap.refused_events,
            1,
        ]
        await buffer.commit_pipeline(
            [], cursor=5, state=None, render=render, gaps_reported=[gap.gap_id]
        )
        assert [g.refused_events for g in await buffer.unreported_gaps()] == [1]
        # Movements are never refused; consumed journal rows make way for them.
        last_id = (await buffer.stats()).journal_last_id
        seqs = await buffer.commit_pipeline(
            [movement(f"n{i}") for i in range(3)], cursor=last_id, state=None, render=render_100
        )
        assert len(seqs) == 3
        stats = await buffer.stats()
        assert stats.used_bytes <= budget
        assert stats.pending == 4
        await assert_counters_match_rows(buffer)
    finally:
        await buffer.close()


async def test_movements_beyond_the_budget_are_kept(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=500)
    try:
        seqs = await buffer.commit_pipeline(
            [movement(f"m{i}") for i in range(10)], cursor=0, state=None, render=render_100
        )
        assert seqs == list(range(1, 11))
        stats = await buffer.stats()
        assert stats.used_bytes > stats.budget_bytes
        assert stats.pending == 10
        with pytest.raises(OutboxFull):
            await buffer.append_raw([tag(1)])
    finally:
        await buffer.close()


# -- corruption ----------------------------------------------------------------------------------


async def test_a_file_that_is_not_sqlite_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite3"
    garbage = b"this is not a database, it is a shopping list\n" * 200
    path.write_bytes(garbage)
    Path(f"{path}-wal").write_bytes(b"wal garbage")
    clock = FakeClock(datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC).timestamp())

    with capture_logs() as logs:
        buffer = await Buffer.open(path, max_bytes=BIG, clock=clock)
    try:
        assert "buffer_corrupt_moved_aside" in [entry["event"] for entry in logs]
        assert await buffer.append_raw([tag(1)]) == 1
        moved = buffer.corrupt_moved_to
    finally:
        await buffer.close()
    assert moved == tmp_path / "buffer.sqlite3.corrupt-20261122T080000Z"
    assert moved.read_bytes() == garbage
    assert Path(f"{moved}-wal").read_bytes() == b"wal garbage"
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM journal").fetchone()[0] == 1
    finally:
        conn.close()


async def _damaged_buffer(path: Path) -> int:
    """A real buffer with one page in the middle overwritten; returns the file size."""

    buffer = await Buffer.open(path, max_bytes=BIG)
    try:
        await buffer.append_raw([tag(i) for i in range(1, 3001)])
        await buffer.commit_pipeline(
            [movement(f"m{i}") for i in range(500)], cursor=0, state=None, render=render_100
        )
        assert await buffer.verify() is None
    finally:
        await buffer.close()
    assert not Path(f"{path}-wal").exists()
    page_b = 4096
    pages = path.stat().st_size // page_b
    assert pages > 20
    with path.open("r+b") as f:
        f.seek(page_b * (pages // 2))
        f.write(random.Random(7).randbytes(page_b))
    return path.stat().st_size


async def _open_moved_rows(path: Path) -> tuple[Path | None, int]:
    buffer = await Buffer.open(path, max_bytes=BIG)
    try:
        return buffer.corrupt_moved_to, (await buffer.stats()).journal_rows
    finally:
        await buffer.close()


async def test_a_database_with_a_damaged_page_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite3"
    size_b = await _damaged_buffer(path)
    moved, rows = await _open_moved_rows(path)
    assert moved is not None
    assert moved.name.startswith("buffer.sqlite3.corrupt-")
    assert moved.stat().st_size == size_b
    assert rows == 0


async def test_large_file_damage_found_by_verify_is_moved_aside_at_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "buffer.sqlite3"
    await _damaged_buffer(path)
    # Pretend the file is large: open() checks only the schema and the small tables.
    monkeypatch.setattr(files, "FULL_CHECK_MAX_BYTES", 0)

    buffer = await Buffer.open(path, max_bytes=BIG)
    try:
        with capture_logs() as logs:
            reason = await buffer.verify()
        moved, events = buffer.corrupt_moved_to, [str(e["event"]) for e in logs]
    finally:
        await buffer.close()
    assert moved is None
    assert reason
    assert "buffer_corrupt_detected" in events
    marker = tmp_path / "buffer.sqlite3.verify-failed"
    assert marker.exists()
    moved, rows = await _open_moved_rows(path)
    assert moved is not None
    assert rows == 0
    assert not marker.exists()


async def test_read_only_open_never_moves_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite3"
    path.write_bytes(b"garbage" * 1000)

    with pytest.raises(BufferUnavailable):
        await Buffer.open(path, max_bytes=BIG, read_only=True)
    assert path.read_bytes() == b"garbage" * 1000
    assert not list(tmp_path.glob("*.corrupt-*"))

    with pytest.raises(BufferUnavailable, match="no buffer file"):
        await Buffer.open(tmp_path / "nothing.sqlite3", max_bytes=BIG, read_only=True)
    assert not (tmp_path / "nothing.sqlite3").exists()


# -- readers beside the writer -------------------------------------------------------------------


async def test_read_only_buffer_beside_a_running_writer(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"

    writer = await Buffer.open(path, max_bytes=BIG)
    try:
        await writer.append_raw([tag(i) for i in range(1, 4)])
        await writer.commit_pipeline([movement("a")], cursor=3, state=b"s", render=render)
        reader = await Buffer.open(path, max_bytes=BIG, read_only=True)
        try:
            stats = await reader.stats()
            assert (stats.journal_rows, stats.pending, stats.cursor) == (3, 1, 3)
            assert [r.id for r in await reader.pending(0, 10)] == ["a"]
            await writer.append_raw([tag(4)])
            await writer.mark_delivered([1])
            assert [i for i, _ in await reader.read_raw(0, 10)] == [1, 2, 3, 4]
            assert (await reader.stats()).pending == 0
            assert [r.id async for r in reader.export_movements()] == ["a"]
            with pytest.raises(BufferUnavailable, match="read-only"):
                await reader.append_raw([tag(5)])
            with pytest.raises(BufferUnavailable, match="read-only"):
                await reader.kv_put("k", b"v")
        finally:
            await reader.close()
        assert await writer.append_raw([tag(5)]) == 5
    finally:
        await writer.close()
    with pytest.raises(BufferUnavailable, match="closed"):
        await writer.stats()
    await writer.close()


# -- properties ----------------------------------------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 5)),
        st.tuples(st.just("commit"), st.lists(st.integers(0, 30), max_size=6)),
        st.tuples(st.just("mark_seqs"), st.lists(st.integers(0, 40), max_size=5)),
        st.tuples(st.just("mark_ids"), st.lists(st.integers(0, 30), max_size=5)),
        st.tuples(st.just("upto"), st.integers(0, 40)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops)
async def test_any_interleaving_keeps_pending_equal_committed_minus_delivered(
    ops: list[tuple[str, object]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await _run_ops(Path(tmp) / "b.sqlite3", ops)


async def _run_ops(path: Path, ops: list[tuple[str, object]]) -> None:
    committed: dict[str, int] = {}  # id -> seq
    delivered: set[str] = set()
    seqs_seen: list[int] = []
    buffer = await Buffer.open(path, max_bytes=BIG)
    try:
        for op, arg in ops:
            if op == "append":
                assert isinstance(arg, int)
                await buffer.append_raw([tag(i) for i in range(arg)])
            elif op == "commit":
                assert isinstance(arg, list)
                names = [f"m{n}" for n in arg]
                seqs = await buffer.commit_pipeline(
                    [movement(n) for n in names], cursor=0, state=None, render=render
                )
                fresh = list(dict.fromkeys(n for n in names if n not in committed))
                assert len(seqs) == len(fresh)
                committed.update(zip(fresh, seqs, strict=True))
                seqs_seen.extend(seqs)
            elif op == "mark_seqs":
                assert isinstance(arg, list)
                by_seq = {s: i for i, s in committed.items()}
                hit = {by_seq[s] for s in arg if s in by_seq} - delivered
                assert await buffer.mark_delivered(list(arg)) == len(hit)
                delivered |= hit
            elif op == "mark_ids":
                assert isinstance(arg, list)
                names = [f"m{n}" for n in arg]
                hit = {n for n in names if n in committed} - delivered
                assert await buffer.mark_delivered_ids(names) == len(hit)
                delivered |= hit
            elif op == "upto":
                assert isinstance(arg, int)
                hit = {i for i, s in committed.items() if s <= arg} - delivered
                assert await buffer.mark_delivered_upto(arg) == len(hit)
                delivered |= hit
            else:
                await buffer.close()
                buffer = await Buffer.open(path, max_bytes=BIG)
            pending_ids = set(committed) - delivered
            stats = await buffer.stats()
            assert stats.pending == len(pending_ids)
            assert stats.delivered_total == len(delivered)
            assert stats.last_seq == len(committed)
            rows = await buffer.pending(0, 1000)
            assert {r.id for r in rows} == pending_ids
            assert all(a.seq < b.seq for a, b in itertools.pairwise(rows))
        assert seqs_seen == list(range(1, len(seqs_seen) + 1))
        await assert_counters_match_rows(buffer)
    finally:
        await buffer.close()


_budget_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 12)),
        st.tuples(st.just("commit"), st.integers(0, 3)),
        st.tuples(st.just("mark"), st.integers(0, 3)),
        st.tuples(st.just("prune"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_budget_ops, consume=st.floats(0.0, 1.0))
async def test_under_any_load_the_budget_never_drops_an_undelivered_movement(
    ops: list[tuple[str, int]], consume: float
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await _run_budget_ops(Path(tmp) / "b.sqlite3", ops, consume)


async def _run_budget_ops(path: Path, ops: list[tuple[str, int]], consume: float) -> None:
    row_b = JOURNAL_ROW_OVERHEAD_B + 2 + len(EPC)
    budget = 24 * row_b
    undelivered: set[str] = set()
    refused = 0
    made = 0
    buffer = await Buffer.open(path, max_bytes=budget)
    try:
        for op, n in ops:
            stats = await buffer.stats()
            if op == "append":
                try:
                    await buffer.append_raw([tag(i) for i in range(n)])
                except OutboxFull:
                    refused += n
            elif op == "commit":
                # The pipeline consumes part of what is journaled and makes n movements.
                unread = stats.journal_last_id - stats.cursor
                cursor = stats.cursor + round(unread * consume)
                names = [f"m{made + k}" for k in range(n)]
                made += n
                await buffer.commit_pipeline(
                    [movement(x) for x in names], cursor=cursor, state=None, render=render_100
                )
                undelivered |= set(names)
            elif op == "mark":
                rows = await buffer.pending(0, n)
                await buffer.mark_delivered([r.seq for r in rows])
                undelivered -= {r.id for r in rows}
            else:
                await buffer.prune_delivered(float("inf"))
            assert {r.id for r in await buffer.pending(0, 10_000)} == undelivered
            stats = await buffer.stats()
            assert stats.refused_events_total == refused
            await assert_counters_match_rows(buffer)
            if op in {"append", "commit"} and stats.used_bytes > budget:
                # After eviction had its chance, only rows it may not touch hold it over.
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
                try:
                    consumed = conn.execute(
                        "SELECT count(*) FROM journal WHERE id <= ?", (stats.cursor,)
                    ).fetchone()[0]
                    delivered = conn.execute(
                        "SELECT count(*) FROM outbox WHERE delivered = 1"
                    ).fetchone()[0]
                finally:
                    conn.close()
                assert (consumed, delivered) == (0, 0)
    finally:
        await buffer.close()


# -- crashes -------------------------------------------------------------------------------------

_KILLED_WRITER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    from gateway.buffer.store import Buffer
    from gateway.domain.events import TagRead
    from gateway.domain.movements import Evidence, Item, Movement

    def movement(name):
        return Movement(id=name, type="receipt", occurred_at_s=1.0, station="s",
                        item=Item(code=name),
                        evidence=Evidence(source="barcode", reader="r",
                                          first_seen_s=1.0, last_seen_s=1.0))

    async def main():
        buffer = await Buffer.open(Path(sys.argv[1]), max_bytes=1 << 30,
                                   synchronous=sys.argv[2])
        for batch in range(20):
            await buffer.append_raw([TagRead("r", "s", "AB", 1, float(batch))] * 10)
            names = [f"b{batch}-{k}" for k in range(50)]
            seqs = await buffer.commit_pipeline(
                [movement(n) for n in names], cursor=10 * (batch + 1),
                state=str(batch).encode(), render=lambda m, s: f"{m.id}@{s}".encode())
            for name, seq in zip(names, seqs):
                sys.stdout.write(f"committed {seq} {name}\\n")
            sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_sigkilled_writer_loses_nothing_commit_returned(
    tmp_path: Path, synchronous: str
) -> None:
    path = tmp_path / "b.sqlite3"
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(path), synchronous],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    reported = [
        line.split()[1:] for line in done.stdout.splitlines() if line.startswith("committed ")
    ]
    assert len(reported) == 1000
    assert Path(f"{path}-wal").exists()  # killed before any clean close

    buffer = await Buffer.open(path, max_bytes=1 << 30)
    try:
        assert buffer.corrupt_moved_to is None
        rows, checkpoint = await buffer.rows_from(0, 5000), await buffer.load_checkpoint()
    finally:
        await buffer.close()
    assert [(str(r.seq), r.id) for r in rows] == [(seq, name) for seq, name in reported]
    assert all(r.payload == f"{r.id}@{r.seq}".encode() for r in rows)
    assert checkpoint == (200, b"19")


# -- boundaries ----------------------------------------------------------------------------------


def test_buffer_imports_only_domain_errors_logs_and_sqlite() -> None:
    allowed_gateway = ("gateway.domain", "gateway.errors", "gateway.logs", "gateway.buffer")
    for source in (ROOT / "gateway" / "buffer").glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.startswith("gateway"):
                    assert name.startswith(allowed_gateway), f"{source.name} imports {name}"
                assert not name.startswith(("paho", "sllurp", "serial")), f"{source.name}: {name}"
