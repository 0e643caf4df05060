"""The supervisor: runs each reader with capped, jittered backoff; the one place crashes stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.domain.events import InputHeard
from gateway.errors import ReaderRejectedConfig, ReaderUnavailable
from gateway.logs import get_logger
from gateway.readers.base import ReaderDriver, ReaderHealth, ReaderState, Sink, WithAck
from gateway.runtime.backoff import Backoff

_log = get_logger("supervisor")

# After a rejected configuration the same config will be refused again: retry slowly.
_REJECTED_RETRY_S = 60.0


@dataclass(slots=True)
class ReaderSlot:
    """One configured reader: the live driver (if any) and totals over its past sessions."""

    reader: str
    kind: str
    driver: ReaderDriver | None = None
    state: ReaderState = "idle"
    events: int = 0
    bad_input: int = 0
    reconnects: int = 0
    last_error: str | None = None
    last_event_at_s: float | None = None
    detail: dict[str, str] = field(default_factory=dict)
    sessions: int = 0
    restart_requested: asyncio.Event = field(default_factory=asyncio.Event)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    on_change: Callable[[], None] | None = None

    def changed(self) -> None:
        """Tell the listener (the status topic) that the state changed; never raises."""
        if self.on_change is not None:
            self.on_change()

    def request_restart(self) -> None:
        """End the current session (or backoff wait) now and connect again with fresh settings."""
        self.restart_requested.set()

    def health(self) -> ReaderHealth:
        """Totals plus the live session, as one record."""
        live = self.driver.health if self.driver is not None else None
        state = live.state if live is not None and self.state == "connected" else self.state
        return ReaderHealth(
            reader=self.reader,
            kind=self.kind,
            state=state,
            events=self.events + (live.events if live else 0),
            bad_input=self.bad_input + (live.bad_input if live else 0),
            reconnects=self.reconnects,
            last_event_at_s=(live.last_event_at_s if live and live.last_event_at_s else None)
            or self.last_event_at_s,
            last_error=(live.last_error if live and live.last_error else None) or self.last_error,
            detail={**self.detail, **(live.detail if live else {})},
        )

    def _close_session(self, driver: ReaderDriver) -> None:
        live = driver.health
        self.events += live.events
        self.bad_input += live.bad_input
        self.last_event_at_s = live.last_event_at_s or self.last_event_at_s
        self.last_error = live.last_error or self.last_error
        self.detail.update(live.detail)
        self.driver = None


async def supervise_reader(
    make_driver: Callable[[], ReaderDriver],
    slot: ReaderSlot,
    sink: Sink,
    backoff: Backoff,
) -> None:
    """Run a reader until its input ends; reconnect after failures; never kill the daemon.

    `slot.request_restart()` ends the session or the backoff wait at once and reconnects with a
    driver made afresh (a changed profile takes effect this way, with no daemon restart).
    `slot.settled` is set once each session has either started (connected and inventorying) or
    failed, so a caller that changed the reader's settings can see the outcome.
    """
    attempt = 0
    while True:
        outcome, connected = await _session(make_driver, slot, sink, attempt)
        # After its last read: the ended session holds no visit open any more.
        await sink(InputHeard(slot.reader, None), None, None)
        if connected:
            attempt = 0
        if outcome == "done":
            return
        if outcome == "restart":
            continue
        if outcome == "rejected":
            await _sleep_or_restart(_REJECTED_RETRY_S, slot)
            continue
        delay_s = backoff.delay_s(attempt)
        attempt += 1
        await _sleep_or_restart(delay_s, slot)


async def _session(
    make_driver: Callable[[], ReaderDriver],
    slot: ReaderSlot,
    sink: Sink,
    attempt: int,
) -> tuple[str, bool]:
    """One connection: ("done" | "restart" | "rejected" | "failed", whether it connected)."""
    slot.restart_requested.clear()
    slot.settled.clear()
    driver = make_driver()
    slot.driver = driver
    slot.state = "connecting"
    slot.sessions += 1
    connected = False
    try:
        async with driver:
            connected = True
            slot.state = "connected"
            slot.settled.set()
            slot.changed()
            if attempt:
                slot.reconnects += 1
                _log.info("reader_reconnected", reader=slot.reader, attempts=attempt)
            restarted = await _consume_until_restart(driver, slot, sink)
    except ReaderRejectedConfig as exc:
        slot._close_session(driver)  # noqa: SLF001 - the slot's own helper
        slot.state = "rejected-config"
        slot.last_error = exc.reason
        _log.error("reader_rejected_config", reader=slot.reader, reason=exc.reason)
        slot.settled.set()
        slot.changed()
        return "rejected", connected
    except ReaderUnavailable as exc:
        live_state = driver.health.state
        slot._close_session(driver)  # noqa: SLF001
        slot.state = "silent" if live_state == "silent" else "down"
        slot.last_error = exc.reason
        log = _log.warning if attempt == 0 else _log.debug
        log("reader_unavailable", reader=slot.reader, reason=exc.reason, attempt=attempt)
        slot.settled.set()
        slot.changed()
        return "failed", connected
    except Exception as exc:  # noqa: BLE001 - containment boundary: a driver bug must not stop the daemon
        slot._close_session(driver)  # noqa: SLF001
        slot.state = "down"
        slot.last_error = f"{type(exc).__name__}: {exc}"
        _log.exception("reader_crashed", reader=slot.reader)
        slot.settled.set()
        slot.changed()
        return "failed", connected
    slot._close_session(driver)  # noqa: SLF001
    if restarted:
        slot.state = "connecting"
        _log.info("reader_session_restarted", reader=slot.reader)
        return "restart", connected
    slot.state = "done"
    _log.info("reader_input_ended", reader=slot.reader)
    return "done", connected


async def _consume_until_restart(driver: ReaderDriver, slot: ReaderSlot, sink: Sink) -> bool:
    """Pass events to the sink until the input ends (False) or a restart is requested (True)."""

    async def consume() -> None:
        async for item in driver.events():
            if isinstance(item, WithAck):
                await sink(item.event, item.ack, item.receipt)
            else:
                await sink(item, None, None)

    consumer = asyncio.create_task(consume(), name=f"reader-events:{slot.reader}")
    restart = asyncio.create_task(
        slot.restart_requested.wait(), name=f"reader-restart:{slot.reader}"
    )
    try:
        done, _ = await asyncio.wait({consumer, restart}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (consumer, restart):
            if not task.done():
                task.cancel()
        await asyncio.gather(consumer, restart, return_exceptions=True)
    if consumer in done:
        consumer.result()  # re-raise ReaderUnavailable and friends
        return False
    return True


async def wait_for_session(slot: ReaderSlot, after_sessions: int, timeout_s: float) -> str:
    """The state of the first session begun after `after_sessions` once settled, or "timeout"."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                await slot.settled.wait()
                if slot.sessions > after_sessions:
                    return slot.health().state
                slot.settled.clear()
    except TimeoutError:
        return "timeout"


async def _sleep_or_restart(delay_s: float, slot: ReaderSlot) -> None:
    try:
        async with asyncio.timeout(delay_s):
            await slot.restart_requested.wait()
    except TimeoutError:
        return
