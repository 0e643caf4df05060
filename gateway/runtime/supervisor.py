"""The supervisor: runs each reader with capped, jittered backoff; the one place crashes stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.domain.events import RawEvent
from gateway.errors import ReaderRejectedConfig, ReaderUnavailable
from gateway.logs import get_logger
from gateway.readers.base import ReaderDriver, ReaderHealth, ReaderState
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
    sink: Callable[[RawEvent], Awaitable[None]],
    backoff: Backoff,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run a reader until its input ends; reconnect after failures; never kill the daemon."""
    attempt = 0
    while True:
        driver = make_driver()
        slot.driver = driver
        slot.state = "connecting"
        try:
            async with driver:
                slot.state = "connected"
                if attempt:
                    slot.reconnects += 1
                    _log.info("reader_reconnected", reader=slot.reader, attempts=attempt)
                attempt = 0
                async for event in driver.events():
                    await sink(event)
        except ReaderRejectedConfig as exc:
            slot._close_session(driver)  # noqa: SLF001
            slot.state = "rejected-config"
            slot.last_error = exc.reason
            _log.error("reader_rejected_config", reader=slot.reader, reason=exc.reason)
            await sleep(_REJECTED_RETRY_S)
            continue
        except ReaderUnavailable as exc:
            live_state = driver.health.state
            slot._close_session(driver)  # noqa: SLF001
            slot.state = "silent" if live_state == "silent" else "down"
            slot.last_error = exc.reason
            log = _log.warning if attempt == 0 else _log.debug
            log("reader_unavailable", reader=slot.reader, reason=exc.reason, attempt=attempt)
        except Exception as exc:  # noqa: BLE001 - containment boundary: a driver bug must not stop the daemon
            slot._close_session(driver)  # noqa: SLF001
            slot.state = "down"
            slot.last_error = f"{type(exc).__name__}: {exc}"
            _log.exception("reader_crashed", reader=slot.reader)
        else:
            slot.state = "done"
            slot._close_session(driver)  # noqa: SLF001 - the slot's own helper
            _log.info("reader_input_ended", reader=slot.reader)
            return
        delay_s = backoff.delay_s(attempt)
        attempt += 1
        await sleep(delay_s)
