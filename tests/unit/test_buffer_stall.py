"""A stalled buffer file is waited out (issue 20): real locks from a second connection, real rows.

Faults SQLite cannot be made to give on demand here (a disk error, corruption, disk full) are
injected by replacing one transaction function; locks are real.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.buffer import files, stall
from gateway.buffer.store import Buffer
from gateway.errors import BufferStalled, BufferUnavailable
from tests.unit.test_buffer import BIG, assert_counters_match_rows, movement, render, tag

HOLD_S = 2.0
SQLITE_FULL = 13


@contextmanager
def held(path: Path, begin: str = "BEGIN EXCLUSIVE", hold_s: float = HOLD_S) -> Iterator[None]:
    """Another connection, on its own thread, holds a write lock for `hold_s`, then commits."""
    taken = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            conn.execute(begin)
            conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('other', x'00')")
            taken.set()
            time.sleep(hold_s)
            conn.execute("COMMIT")
        finally:
            conn.close()

    thread = threading.Thread(target=hold, name="other-writer")
    thread.start()
    try:
        assert taken.wait(5), "the other writer never got the lock"
        yield
    finally:
        thread.join()


def count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def sqlite_error(code: int, text: str) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(text)
    exc.sqlite_errorcode = code
    return exc


def failing(times: int, exc: sqlite3.Error, then: Callable[..., Any]) -> Callable[..., Any]:
    """A transaction function that raises `exc` `times` times, then runs `then`."""
    calls = {"n": 0}

    def fn(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            raise exc
        return then(*args)

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


async def read_until(buffer: Buffer, *tasks: asyncio.Task[Any]) -> None:
    """Read while `tasks` run: WAL lets reads through a held lock, and they do not end a stall."""
    while not all(task.done() for task in tasks):
        await buffer.read_raw(0, 1)
        await asyncio.sleep(0.01)


async def test_append_and_commit_wait_out_a_held_lock_and_write_once(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    seen: list[stall.StallState] = []
    try:
        with capture_logs() as logs, held(buffer.path):
            started = time.monotonic()
            append = asyncio.create_task(buffer.append_raw([tag(i) for i in range(1, 11)]))
            commit = asyncio.create_task(
                buffer.commit_pipeline(
                    [movement("m1"), movement("m2")], cursor=0, state=b"s", render=render
                )
            )
            reads = asyncio.create_task(read_until(buffer, append, commit))
            while not (append.done() and commit.done()):
                seen.append(buffer.stall.state())
                await asyncio.sleep(0.02)
            await reads
            waited_s = time.monotonic() - started
            last_id, seqs = await append, await commit
        assert waited_s >= HOLD_S * 0.8
        assert (last_id, seqs) == (10, [1, 2])
        assert count(buffer.path, "SELECT count(*) FROM journal") == 10
        assert count(buffer.path, "SELECT count(*) FROM outbox") == 2
        await assert_counters_match_rows(buffer)
        stalled = [s for s in seen if s.stalled]
        assert stalled, "health never saw the stall"
        assert stalled[-1].reason == "database is locked"
        assert stalled[-1].since_s is not None
        after = buffer.stall.state()
        assert not after.stalled
        assert after.stalls_total == 1
        assert HOLD_S * 0.4 < after.stall_seconds_total < HOLD_S + 1.5
        events = [e["event"] for e in logs if e["event"].startswith("buffer_")]
        assert events.count("buffer_stalled") == 1
        assert events.count("buffer_stall_ended") == 1
        ended = next(e for e in logs if e["event"] == "buffer_stall_ended")
        assert ended["log_level"] == "info"
        assert ended["duration_s"] > 0
        assert ended["gave_up"] is False
        assert next(e for e in logs if e["event"] == "buffer_stalled")["log_level"] == "warning"
    finally:
        await buffer.close()


async def test_reads_between_retries_do_not_end_the_stall(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    try:
        with capture_logs() as logs, held(buffer.path, hold_s=3.0):
            append = asyncio.create_task(buffer.append_raw([tag(1)]))
            await read_until(buffer, append)
            assert await append == 1
        stalls = [e["event"] for e in logs if e["event"].startswith("buffer_stal")]
        assert stalls == ["buffer_stalled", "buffer_stall_ended"]
        assert buffer.stall.state().stalls_total == 1
    finally:
        await buffer.close()


async def test_reads_go_on_while_another_connection_writes(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    try:
        await buffer.append_raw([tag(1), tag(2)])
        with held(buffer.path, "BEGIN IMMEDIATE"):
            started = time.monotonic()
            rows = await buffer.read_raw(0, 10)
            assert time.monotonic() - started < 0.5  # WAL: a writer does not block readers
        assert [journal_id for journal_id, _ in rows] == [1, 2]
        assert not buffer.stall.state().stalled
    finally:
        await buffer.close()


async def test_an_exclusive_locking_mode_writer_cannot_take_an_open_buffer(
    tmp_path: Path,
) -> None:
    # The other way a tool could block readers too: SQLite refuses it while the buffer is open.
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    conn = sqlite3.connect(buffer.path, isolation_level=None, timeout=0.5)
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError) as refused:
            conn.execute("BEGIN EXCLUSIVE")
        assert refused.value.sqlite_errorcode & 0xFF == stall.SQLITE_BUSY
        assert await buffer.append_raw([tag(1)]) == 1
    finally:
        conn.close()
        await buffer.close()


async def test_a_transaction_that_fails_midway_is_rolled_back_and_run_again_once(
    tmp_path: Path,
) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    calls = 0

    def also(conn: sqlite3.Connection) -> None:
        nonlocal calls
        calls += 1
        conn.execute("INSERT INTO kv (key, value) VALUES ('also', x'01')")
        if calls == 1:  # after the movements and the kv row were written in this transaction
            raise sqlite_error(stall.SQLITE_BUSY | (2 << 8), "database is locked")

    try:
        seqs = await buffer.commit_pipeline(
            [movement("m1"), movement("m2")], cursor=0, state=b"s", render=render, also=also
        )
        assert calls == 2
        assert seqs == [1, 2]
        assert count(buffer.path, "SELECT count(*) FROM outbox") == 2
        assert count(buffer.path, "SELECT count(*) FROM kv WHERE key = 'also'") == 1
        await assert_counters_match_rows(buffer)
    finally:
        await buffer.close()


async def test_a_failed_commit_leaves_no_transaction_open(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    opened = buffer._file  # the authorizer must be set on the connection itself
    refuse = {"commit": False}

    def authorize(action: int, operation: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and operation == "COMMIT" and refuse["commit"]:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def in_transaction() -> bool:
        return opened.raw.in_transaction

    try:
        await files.run_on_connection(opened.db, opened.path, opened.raw.set_authorizer, authorize)
        refuse["commit"] = True
        with pytest.raises(BufferUnavailable) as failed:
            await buffer.append_raw([tag(1)])
        assert not isinstance(failed.value, BufferStalled)
        assert not await files.run_on_connection(opened.db, opened.path, in_transaction)
        refuse["commit"] = False
        assert await buffer.append_raw([tag(2)]) == 1
        assert count(buffer.path, "SELECT count(*) FROM journal") == 1
    finally:
        await buffer.close()


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (11, "database disk image is malformed"),
        (26, "file is not a database"),
        (13, "database or disk is full"),
    ],
)
async def test_a_fault_that_will_not_pass_raises_at_once(
    tmp_path: Path, code: int, text: str
) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    tx = buffer._tx  # inject a fault SQLite will not give on demand
    fn = failing(10, sqlite_error(code, text), tx.append)
    tx.append = fn  # type: ignore[method-assign]
    try:
        with capture_logs() as logs, pytest.raises(BufferUnavailable) as failed:
            await buffer.append_raw([tag(1)])
        assert not isinstance(failed.value, BufferStalled)
        assert (failed.value.code, failed.value.reason) == (code, text)
        assert fn.calls["n"] == 1  # type: ignore[attr-defined]
        assert not any(e["event"] == "buffer_stalled" for e in logs)
        marker = buffer.path.with_name(buffer.path.name + files.VERIFY_FAILED_SUFFIX)
        assert marker.exists() == (code != SQLITE_FULL)  # damage: the next open checks it all
    finally:
        await buffer.close()


async def test_a_disk_error_that_passes_is_retried(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    tx = buffer._tx  # inject a fault SQLite will not give on demand
    fn = failing(3, sqlite_error(stall.SQLITE_IOERR | (4 << 8), "disk I/O error"), tx.append)
    tx.append = fn  # type: ignore[method-assign]
    try:
        assert await buffer.append_raw([tag(1)]) == 1
        assert fn.calls["n"] == 4  # type: ignore[attr-defined]
        state = buffer.stall.state()
        assert (state.stalled, state.stalls_total, state.retries_total) == (False, 1, 3)
        assert count(buffer.path, "SELECT count(*) FROM journal") == 1
    finally:
        await buffer.close()


async def test_a_disk_error_that_lasts_ends_in_buffer_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stall, "IOERR_WAIT_MAX_S", 0.3)
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    tx = buffer._tx  # inject a fault SQLite will not give on demand
    tx.append = failing(  # type: ignore[method-assign]
        10_000, sqlite_error(stall.SQLITE_IOERR, "disk I/O error"), tx.append
    )
    try:
        with pytest.raises(BufferUnavailable) as failed:
            await asyncio.wait_for(buffer.append_raw([tag(1)]), timeout=5)
        assert not isinstance(failed.value, BufferStalled)
        assert failed.value.code == stall.SQLITE_IOERR
        assert "disk I/O errors for" in failed.value.reason
    finally:
        await buffer.close()


def test_retry_delay_doubles_from_50ms_to_1s_with_jitter_below() -> None:
    assert [stall.retry_delay_s(n, 0.0) for n in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert stall.retry_delay_s(1000, 0.0) == 1.0
    assert stall.retry_delay_s(1000, 0.999) >= 0.8


def test_transient_codes_are_told_by_code_not_text() -> None:
    assert stall.is_transient(stall.primary_code(sqlite_error(5 | (1 << 8), "anything")))
    assert stall.is_transient(stall.primary_code(sqlite_error(6, "x")))
    assert stall.is_transient(stall.primary_code(sqlite_error(10 | (13 << 8), "x")))
    assert not stall.is_transient(stall.primary_code(sqlite_error(13, "database is locked")))
    assert not stall.is_transient(stall.primary_code(sqlite3.OperationalError("locked")))


async def test_the_background_check_waits_out_a_stall_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It used to end the run: its error went up to the task group like any other.
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_bytes=BIG)
    check = failing(2, sqlite_error(stall.SQLITE_BUSY, "database is locked"), lambda *_: None)
    monkeypatch.setattr(files, "_integrity_check", check)
    try:
        assert await buffer.verify() is None
        assert check.calls["n"] == 3  # type: ignore[attr-defined]
        assert buffer.stall.state().stalls_total == 1
    finally:
        await buffer.close()
