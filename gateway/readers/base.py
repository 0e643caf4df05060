"""The small interface every reader and scanner driver satisfies, and its health record."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, Self

from gateway.domain.events import InputHeard, RawEvent

ReaderState = Literal[
    "idle", "connecting", "connected", "inventorying", "silent", "rejected-config", "down", "done"
]


@dataclass(slots=True)
class ReaderHealth:
    """Mutable health of one driver, read by the supervisor, status topic and metrics."""

    reader: str
    kind: str
    state: ReaderState = "idle"
    events: int = 0
    bad_input: int = 0
    reconnects: int = 0
    last_event_at_s: float | None = None
    last_error: str | None = None
    detail: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What identifies a broker's delivery across a redelivery: its packet id and a digest.

    The journal records it with the event, in the same transaction; a delivery flagged `dup`
    whose (mid, digest) is recorded is acknowledged again and not journaled twice.
    """

    mid: int
    digest: bytes
    dup: bool


@dataclass(frozen=True, slots=True)
class WithAck:
    """An event its source acknowledges (an MQTT PUBACK) only once the journal holds it.

    `ack` is called on the loop after the journal's commit (or after the buffer refused the event
    and recorded the gap); never before. It must not raise.
    """

    event: RawEvent
    ack: Callable[[], None]
    receipt: Receipt | None = None


ReaderItem = RawEvent | InputHeard | WithAck
"""What `events()` yields: an event, an event to acknowledge once journaled, or a heard mark."""

Ack = Callable[[], None]
Sink = Callable[[RawEvent | InputHeard, Ack | None, Receipt | None], Awaitable[None]]
"""Where the supervisor hands items: waits while the journal's queue is full (backpressure)."""


class ReaderDriver(Protocol):
    """`async with` connects; `events()` yields events; a lost device raises ReaderUnavailable."""

    @property
    def id(self) -> str:
        """The configured reader id."""
        ...

    @property
    def health(self) -> ReaderHealth:
        """Live health of this driver."""
        ...

    async def __aenter__(self) -> Self:
        """Connect; raise ReaderUnavailable if the device cannot be reached."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Disconnect, releasing every thread, socket and file within a few seconds."""
        ...

    def events(self) -> AsyncIterator[ReaderItem]:
        """Yield events until the input ends (replay) or fails (raises ReaderUnavailable)."""
        ...
