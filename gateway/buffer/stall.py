"""Waiting out a stalled buffer file: which SQLite errors pass, the retry, and the stall's record.

Another writer on the file (a backup tool, a technician's `sqlite3` shell) makes SQLite answer
SQLITE_BUSY or SQLITE_LOCKED; a slow or briefly failing disk, SQLITE_IOERR. These pass: the
buffer runs the whole transaction function again after a short capped backoff, so every user of
the buffer simply waits and the readers are held back by the journal's full queue. A lock is
waited out for as long as it is held (restarting would not free it, and the daemon could not even
open the file while it is held); a disk error for `IOERR_WAIT_MAX_S` at most, since a card or
disk that fails for a minute is not coming back by itself. Every other SQLite error (SQLITE_FULL,
SQLITE_CORRUPT, SQLITE_NOTADB, a closed connection) raises `BufferUnavailable` at once.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gateway.errors import BufferStalled, BufferUnavailable
from gateway.logs import get_logger

_log = get_logger("buffer")

SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_IOERR = 10
# Two connections racing for the WAL index; SQLite itself retries it a few times, rarely seen.
SQLITE_PROTOCOL = 15
# Held by another connection: waited out for as long as it lasts.
LOCK_CODES = frozenset({SQLITE_BUSY, SQLITE_LOCKED, SQLITE_PROTOCOL})
# An SD card's or USB disk's hiccup passes within seconds; a minute of errors is a dead disk.
IOERR_WAIT_MAX_S = 60.0
# Between tries: 50 ms doubling to 1 s, less up to a fifth (jitter). SQLite's busy handler has
# already waited up to busy_timeout before each "locked" answer, so a lock held a little longer is
# not hammered, and the first try after it ends comes within about a second.
RETRY_MIN_S = 0.05
RETRY_MAX_S = 1.0
RETRY_JITTER = 0.2
_T = TypeVar("_T")
_RNG = random.Random()  # noqa: S311 - jitter, not cryptography


def primary_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of an error (extended codes folded), or None if it has none."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def retry_delay_s(tries: int, draw: float) -> float:
    """The wait after `tries` failed tries (0-based), `draw` in [0, 1) taking off the jitter."""
    ceiling = min(RETRY_MAX_S, RETRY_MIN_S * 2.0 ** min(tries, 32))
    return ceiling * (1 - RETRY_JITTER * draw)


def is_transient(code: int | None) -> bool:
    """True for the result codes a buffer waits out (a held lock, a disk error that may pass)."""
    return code in LOCK_CODES or code == SQLITE_IOERR


@dataclass(frozen=True, slots=True)
class StallState:
    """The buffer's stall as health shows it: since when (wall clock) and why, and totals."""

    stalled: bool
    since_s: float | None
    for_s: float | None
    reason: str | None
    stall_seconds_total: float
    stalls_total: int
    retries_total: int


class StallWatch:
    """Retries a buffer operation while the file is stalled and records the stall for health."""

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._clock = clock
        self._monotonic = monotonic
        self._since_s: float | None = None
        self._since_mono = 0.0
        self._reason: str | None = None
        self._ended_seconds = 0.0
        self._stalls = 0
        self._retries = 0
        self._stall_retries = 0
        # Calls waiting on the file now: the stall lasts while there is one.
        self._waiting = 0
        # Told when a stall starts or ends (the forwarder republishes its retained status).
        self.on_change: Callable[[], None] | None = None

    def state(self) -> StallState:
        """The stall now; `stall_seconds_total` includes the one going on."""
        ongoing = 0.0 if self._since_s is None else self._monotonic() - self._since_mono
        return StallState(
            stalled=self._since_s is not None,
            since_s=self._since_s,
            for_s=None if self._since_s is None else round(ongoing, 3),
            reason=self._reason,
            stall_seconds_total=self._ended_seconds + ongoing,
            stalls_total=self._stalls,
            retries_total=self._retries,
        )

    async def run(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """`await attempt()` until it does not raise `BufferStalled` (a disk error: for a while).

        `attempt` must run one whole transaction that a failure rolls back, so that running it
        again does what one successful run would have done. The file counts as stalled from the
        start of the first try that failed until no call is waiting any more: reads that WAL
        lets through meanwhile do not end it.
        """
        tries = 0
        ioerr_since: float | None = None
        waiting = False
        done = False
        try:
            while True:
                began_s, began_mono = self._clock(), self._monotonic()
                try:
                    result = await attempt()
                except BufferStalled as exc:
                    now = self._monotonic()
                    if exc.code == SQLITE_IOERR:
                        ioerr_since = began_mono if ioerr_since is None else ioerr_since
                        if now - ioerr_since >= IOERR_WAIT_MAX_S:
                            raise BufferUnavailable(
                                exc.path,
                                f"disk I/O errors for {now - ioerr_since:.0f}s: {exc.reason}",
                                exc.code,
                            ) from exc
                    if not waiting:
                        waiting = True
                        self._waiting += 1
                        if self._since_s is None:
                            self._started(exc, began_s, began_mono)
                    self._reason = exc.reason
                    self._retries += 1
                    self._stall_retries += 1
                    delay_s = retry_delay_s(tries, _RNG.random())
                    tries += 1
                    _log.debug(
                        "buffer_retry", reason=exc.reason, attempt=tries, delay_s=round(delay_s, 3)
                    )
                    await asyncio.sleep(delay_s)
                    continue
                done = True
                return result
        finally:
            if waiting:
                self._waiting -= 1
                if self._waiting == 0:
                    self._ended(gave_up=not done)

    def _started(self, exc: BufferStalled, began_s: float, began_mono: float) -> None:
        self._since_s = began_s
        self._since_mono = began_mono
        self._reason = exc.reason
        self._stalls += 1
        self._stall_retries = 0
        _log.warning(
            "buffer_stalled",
            path=self._path,
            reason=exc.reason,
            code=exc.code,
            advice="another program holds the buffer file or the disk is failing; "
            "input waits, nothing is lost",
        )
        self._changed()

    def _ended(self, *, gave_up: bool) -> None:
        """No call waits any more: the last one got through, or (`gave_up`) was cancelled."""
        duration_s = self._monotonic() - self._since_mono
        self._ended_seconds += duration_s
        _log.info(
            "buffer_stall_ended",
            path=self._path,
            duration_s=round(duration_s, 3),
            reason=self._reason,
            retries=self._stall_retries,
            gave_up=gave_up,
        )
        self._since_s = None
        self._reason = None
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
