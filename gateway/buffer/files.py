"""The buffer file's life: open a connection, check the file, move a damaged one aside.

A damaged file is never deleted: it is renamed with its -wal and -shm to
`<name>.corrupt-<UTC time>` and a fresh buffer starts in its place. Checking a large file reads
all of it, so above `FULL_CHECK_MAX_BYTES` open() checks the schema and the small tables only and
`verify()` checks the rest in the background; a failed `verify()` leaves a marker that makes the
next open() check fully.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import aiosqlite

from gateway.buffer.rows import SELECT_COUNTERS
from gateway.buffer.schema import migrate, require_latest
from gateway.buffer.stall import is_transient, primary_code
from gateway.errors import BufferStalled, BufferUnavailable
from gateway.logs import get_logger

_log = get_logger("buffer")

BUSY_TIMEOUT_MS = 5000
# Once open, the writer's own wait for a held lock is short: a stall shows in health within a
# second, and between its retries (`stall.py`) the connection thread serves the reads that WAL
# lets through (the forwarder keeps publishing what was committed).
RUNNING_BUSY_TIMEOUT_MS = 1000
CACHE_KIB = 4096
WAL_SIZE_LIMIT_B = 64 * 1024 * 1024
# `quick_check` verifies every page and record but not that indexes match their tables;
# `integrity_check` also does that and takes about three times longer (1.1 s against 3.2 s on a
# 1,000,000-movement file with a warm page cache; see bench/bench_memory.py).
CHECK_PRAGMA = "quick_check"
# Any full check reads the whole file: 17 s for that file from a cold cache on this machine.
FULL_CHECK_MAX_BYTES = 64 * 1024 * 1024
VERIFY_FAILED_SUFFIX = ".verify-failed"
_SMALL_TABLES = ("counters", "checkpoint", "gaps", "kv")

# aiosqlite requires it; it only applies to aiosqlite cursors, which the buffer does not use.
_CURSOR_CHUNK_ROWS = 1000
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BufferFile:
    """An open buffer file: its aiosqlite connection and the sqlite3 connection inside it."""

    path: Path
    db: aiosqlite.Connection
    # Used only on the aiosqlite thread, inside functions passed to `run_on_connection`.
    raw: sqlite3.Connection
    # Where a damaged file found at open went, or None.
    corrupt_moved_to: Path | None


class _CorruptError(Exception):
    """Raised on the connection thread when the file is damaged or not SQLite at all."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def open_writer(
    path: Path,
    *,
    max_bytes: int,
    synchronous: Literal["FULL", "NORMAL"],
    clock: Callable[[], float],
) -> BufferFile:
    """Check, migrate and open `path` for writing; a damaged file is moved aside first."""
    moved_to: Path | None = None
    marker = _verify_marker(path)
    full = marker.exists() or _size(path) <= FULL_CHECK_MAX_BYTES
    reason = await _check_existing(path, full=full)
    if reason is not None:
        moved_to = _set_aside(path, clock(), reason)
    marker.unlink(missing_ok=True)
    try:
        db, raw = await _connect_writer(path, synchronous, max_bytes)
    except _CorruptError as exc:
        # Damage the read-only check did not reach (the schema pages, a migration's pages).
        if moved_to is not None:
            raise BufferUnavailable(str(path), f"fresh buffer unusable: {exc.reason}") from exc
        moved_to = _set_aside(path, clock(), exc.reason)
        try:
            db, raw = await _connect_writer(path, synchronous, max_bytes)
        except _CorruptError as again:
            raise BufferUnavailable(str(path), f"fresh buffer unusable: {again.reason}") from again
    return BufferFile(path, db, raw, moved_to)


async def open_reader(path: Path) -> BufferFile:
    """Open an existing buffer read-only; never migrates and never moves a file."""
    if not path.is_file():  # noqa: ASYNC240 - one stat at start-up, for a clear error
        raise BufferUnavailable(str(path), "no buffer file")
    db, raw = await _connect(path, read_only=True)
    try:
        await run_on_connection(db, path, _prepare_reader, raw, str(path))
    except _CorruptError as exc:
        await db.close()
        raise BufferUnavailable(str(path), f"corrupt: {exc.reason}") from exc
    except BaseException:
        await db.close()
        raise
    return BufferFile(path, db, raw, None)


async def verify(path: Path) -> str | None:
    """Check every page of `path`; on damage log it, leave the marker and return the reason."""
    reason = await _check_existing(path, full=True)
    if reason is not None:
        marker = _verify_marker(path)
        await asyncio.to_thread(marker.write_text, reason + "\n")
        _log.error(
            "buffer_corrupt_detected",
            path=str(path),
            reason=reason,
            marker=str(marker),
            advice="restart: the damaged file will be moved aside and a fresh one started",
        )
    return reason


async def run_on_connection(
    db: aiosqlite.Connection, path: Path, fn: Callable[..., _T], *args: Any
) -> _T:
    """Run `fn(*args)` on the connection's thread; wrap SQLite errors once.

    `BufferStalled` when SQLite's answer may pass (a held lock, a disk error), else
    `BufferUnavailable`.
    """
    try:
        # aiosqlite's own queue runs the whole function on its connection thread; its public
        # methods take one statement at a time, which would let transactions interleave.
        result = await db._execute(fn, *args)  # type: ignore[no-untyped-call]  # noqa: SLF001 - see comment above
    except sqlite3.Error as exc:
        code = primary_code(exc)
        if is_transient(code):
            raise BufferStalled(str(path), str(exc), code) from exc
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            # Damage met while running: the next open checks every page, however large the file.
            with suppress(OSError):  # a reader without write access, a full disk: still fails
                _verify_marker(path).write_text(f"{exc}\n")
        raise BufferUnavailable(str(path), str(exc), code) from exc
    except ValueError as exc:
        if str(exc) == "Connection closed":
            raise BufferUnavailable(str(path), "closed") from exc
        raise
    return cast("_T", result)


def disk_bytes(path: Path) -> int:
    """Bytes the buffer takes on disk: the file and its write-ahead log."""
    return sum(_size(Path(f"{path}{suffix}")) for suffix in ("", "-wal"))


# -- private helpers -----------------------------------------------------------------------------


async def _connect(
    path: Path, *, read_only: bool
) -> tuple[aiosqlite.Connection, sqlite3.Connection]:
    """An aiosqlite connection and the sqlite3 connection it wraps (used only on its thread)."""
    made: list[sqlite3.Connection] = []

    def connector() -> sqlite3.Connection:
        if read_only:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
        else:
            conn = sqlite3.connect(path, isolation_level=None)
        made.append(conn)
        return conn

    db = aiosqlite.Connection(connector, iter_chunk_size=_CURSOR_CHUNK_ROWS)
    try:
        await db
    except sqlite3.Error as exc:
        raise BufferUnavailable(str(path), f"cannot open: {exc}") from exc
    return db, made[0]


async def _connect_writer(
    path: Path, synchronous: str, max_bytes: int
) -> tuple[aiosqlite.Connection, sqlite3.Connection]:
    """A writer connection with pragmas set and migrations run; closed again if that fails."""
    db, raw = await _connect(path, read_only=False)
    try:
        await run_on_connection(db, path, _prepare_writer, raw, str(path), synchronous, max_bytes)
    except BaseException:
        await db.close()
        raise
    return db, raw


def _prepare_writer(conn: sqlite3.Connection, where: str, synchronous: str, max_bytes: int) -> None:
    """Pragmas and migrations on a writer connection; `_CorruptError` if damaged.

    The WAL is checkpointed and truncated at a quarter of the byte budget (at most 64 MiB), so
    a small budget is not dwarfed by SQLite's default 4 MB WAL.
    """
    wal_limit_b = min(WAL_SIZE_LIMIT_B, max(64 * 1024, max_bytes // 4))
    with _corruption_raised():
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BufferUnavailable(where, f"cannot switch to WAL (journal_mode={mode})")
        conn.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute(f"PRAGMA journal_size_limit = {wal_limit_b}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, wal_limit_b // 4096)}")
        migrate(conn, where)
        conn.execute(SELECT_COUNTERS).fetchone()
        conn.execute(f"PRAGMA busy_timeout = {RUNNING_BUSY_TIMEOUT_MS}")


def _prepare_reader(conn: sqlite3.Connection, where: str) -> None:
    """Check that a read-only connection sees a buffer this code understands."""
    with _corruption_raised():
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = ON")
        require_latest(conn, where)
        conn.execute(SELECT_COUNTERS).fetchone()


@contextmanager
def _corruption_raised() -> Iterator[None]:
    """Turn SQLite's "damaged" errors into `_CorruptError`; other errors pass unchanged."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if _is_corruption(exc):
            raise _CorruptError(str(exc)) from exc
        raise


async def _check_existing(path: Path, *, full: bool) -> str | None:
    """Check an existing file (all of it, or schema and small tables); why it is corrupt, or None.

    The check uses its own read-only connection: a writer closing on a damaged file deletes its
    -wal, which must go aside with the file, untouched; and a check beside a running writer must
    not hold up the writer's thread.
    """
    if _size(path) == 0:
        return None
    db, raw = await _connect(path, read_only=True)
    try:
        return await run_on_connection(db, path, _integrity_check, raw, full)
    except asyncio.CancelledError:
        # A full check can take seconds; stop it now so that close() does not wait for it.
        raw.interrupt()
        raise
    finally:
        await db.close()


def _integrity_check(conn: sqlite3.Connection, full: bool) -> str | None:
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if full:
            pragmas = [f"PRAGMA {CHECK_PRAGMA}"]
        else:
            present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            pragmas = [f"PRAGMA {CHECK_PRAGMA}({t})" for t in _SMALL_TABLES if t in present]
        for pragma in pragmas:
            result = [str(r[0]) for r in conn.execute(pragma).fetchmany(5)]
            if result != ["ok"]:
                return "; ".join(result)
    except sqlite3.DatabaseError as exc:
        if _is_corruption(exc):
            return str(exc)
        raise
    return None


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in {_SQLITE_CORRUPT, _SQLITE_NOTADB}
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _verify_marker(path: Path) -> Path:
    return path.with_name(f"{path.name}{VERIFY_FAILED_SUFFIX}")


def _set_aside(path: Path, now_s: float, reason: str) -> Path:
    moved_to = _move_aside(path, now_s)
    _log.error(
        "buffer_corrupt_moved_aside",
        path=str(path),
        moved_to=str(moved_to),
        reason=reason,
        advice="started with an empty buffer; keep the damaged file for analysis",
    )
    return moved_to


def _move_aside(path: Path, now_s: float) -> Path:
    """Rename the file and its -wal/-shm to `<name>.corrupt-<UTC timestamp>`; never delete."""
    stamp = datetime.fromtimestamp(now_s, UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    attempt = 1
    while any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm")):
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{attempt}")
        attempt += 1
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(f"{target}{suffix}")
    return target


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
