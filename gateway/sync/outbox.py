"""What sync needs of the outbox: rows in `seq` order and ways to mark them delivered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class OutboxRowLike(Protocol):
    """One outbox row as the forwarder needs it."""

    @property
    def seq(self) -> int: ...

    @property
    def id(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


class OutboxSource(Protocol):
    """What the forwarder needs of the outbox (the buffer's Buffer satisfies it)."""

    async def pending(self, after_seq: int, limit: int) -> Sequence[OutboxRowLike]:
        """Undelivered rows with `seq > after_seq`, ascending, at most `limit`."""
        ...

    async def mark_delivered(self, seqs: Sequence[int]) -> int:
        """Mark these rows delivered; return how many changed."""
        ...

    async def mark_delivered_ids(self, ids: Sequence[str]) -> int:
        """Mark the rows with these movement ids delivered; return how many changed."""
        ...

    async def mark_delivered_upto(self, seq: int) -> int:
        """Mark every row with `seq <= seq` delivered; return how many changed."""
        ...
