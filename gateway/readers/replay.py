"""The replay reader: raw events from a JSONL file, at a set rate, through the real pipeline.

Lines without an `at` get `epoch_s + line_index / rate_per_s`, with `epoch_s` fixed by the caller
at the first run, so a replay restarted after a crash produces the same events, the pipeline the
same movement ids, and the outbox drops the copies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from gateway.domain.events import RawEvent
from gateway.domain.wire import parse_raw_line
from gateway.errors import InputError, ReaderUnavailable
from gateway.logs import get_logger
from gateway.readers.base import ReaderHealth

_log = get_logger("replay")
_CHUNK_LINES = 256


class ReplayDriver:
    """Feeds a JSONL file of raw events; bad lines are counted and logged, never fatal."""

    def __init__(
        self,
        reader_id: str,
        station: str,
        path: Path,
        *,
        rate_per_s: float,
        epoch_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._id = reader_id
        self._station = station
        self._path = path
        self._rate_per_s = rate_per_s
        self._epoch_s = epoch_s
        self._monotonic = monotonic
        self._file: IO[bytes] | None = None
        self._health = ReaderHealth(reader=reader_id, kind="replay")

    @property
    def id(self) -> str:
        """The configured reader id."""
        return self._id

    @property
    def health(self) -> ReaderHealth:
        """Live health of this driver."""
        return self._health

    async def __aenter__(self) -> Self:
        """Open the file; a missing or unreadable file is ReaderUnavailable."""
        self._health.state = "connecting"
        try:
            self._file = self._path.open("rb")
        except OSError as exc:
            self._health.state = "down"
            self._health.last_error = str(exc)
            raise ReaderUnavailable(self._id, f"cannot open {self._path}: {exc.strerror}") from exc
        self._health.state = "connected"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None

    async def events(self) -> AsyncIterator[RawEvent]:
        """Yield the file's events at `rate_per_s`; end at the end of the file."""
        if self._file is None:
            raise ReaderUnavailable(self._id, "not opened")
        self._health.state = "inventorying"
        started = self._monotonic()
        index = 0
        # Pace in chunks of about 50 ms of input, so a slow replay does not come in bursts.
        chunk = max(1, min(_CHUNK_LINES, int(self._rate_per_s / 20)))
        for line_no, line in enumerate(self._file, start=1):
            if not line.strip():
                continue
            at_default = self._epoch_s + index / self._rate_per_s
            index += 1
            try:
                event = parse_raw_line(
                    line, reader=self._id, station=self._station, now_s=at_default
                )
            except InputError as exc:
                self._health.bad_input += 1
                _log.warning(
                    "replay_line_rejected", reader=self._id, line=line_no, reason=exc.reason
                )
                continue
            self._health.events += 1
            self._health.last_event_at_s = event.at_s
            yield event
            if index % chunk == 0:
                ahead_s = index / self._rate_per_s - (self._monotonic() - started)
                await asyncio.sleep(max(0.0, ahead_s))
        self._health.state = "done"
        _log.info(
            "replay_finished",
            reader=self._id,
            events=self._health.events,
            bad_lines=self._health.bad_input,
        )
