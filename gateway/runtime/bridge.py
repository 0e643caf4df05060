"""The one bridge from a driver's own thread (sllurp, pyserial) into the asyncio loop.

A producer thread `put`s items, each with a weight (reads for LLRP, chunks for serial). While the
queued weight is at capacity, `put` blocks: the thread stops reading its socket or device, so the
reader, the kernel or the device holds the rest, and nothing taken is ever dropped. The loop is
woken once per batch (one `call_soon_threadsafe`, on the empty -> non-empty transition only) and
`get_batch` takes everything queued in one call. Weightless marks (`put_mark`) never block and
coalesce at the tail: consecutive marks keep only the latest.

`close()` (the consumer is gone) releases a waiting producer, whose `put` then returns False.
Whatever could not be delivered (queued when closed, put after closing, or queued when the loop
itself was closed) is counted in `lost` and logged, never discarded in silence.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, TypeVar

from gateway.logs import get_logger

_log = get_logger("bridge")

T = TypeVar("T")


class ThreadBridge(Generic[T]):
    """Bounded by weight; a full bridge blocks its producer thread; one loop wake-up per batch.

    Create it on the loop's thread. `put`/`put_mark` are for other threads (called on the loop's
    own thread they never block, since the loop would then never take); the rest is for the loop.
    """

    def __init__(self, capacity: int, *, name: str) -> None:
        if capacity < 1:
            msg = f"capacity must be at least 1, not {capacity}"
            raise ValueError(msg)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._capacity = capacity
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._items: list[T] = []
        self._weight = 0
        self._tail_is_mark = False
        self._signalled = False  # the loop has been told about the items queued now
        self._closed = False
        self._ready = asyncio.Event()
        self._producer_waiting = False
        self.wakeups = 0
        self.waits = 0
        self.lost = 0

    @property
    def closed(self) -> bool:
        """Whether `close()` was called or the loop was found closed."""
        return self._closed

    @property
    def queued_weight(self) -> int:
        """The weight queued now, not yet taken."""
        return self._weight

    @property
    def producer_waiting(self) -> bool:
        """Whether a producer is blocked right now, waiting for room."""
        return self._producer_waiting

    def put(self, item: T, weight: int = 1) -> bool:
        """Queue `item`, blocking while full; False (item counted lost) once the bridge is closed.

        An item heavier than the capacity goes in alone, when the bridge is empty.
        """
        with self._cond:
            if threading.get_ident() != self._loop_thread:
                self._wait_for_room(weight)
            if self._closed:
                self._count_lost_locked(weight, "put after close")
                return False
            self._items.append(item)
            self._weight += weight
            self._tail_is_mark = False
            return self._signal_locked()

    def put_mark(self, item: T) -> bool:
        """Queue a weightless mark, replacing a mark at the tail; never blocks; False if closed."""
        with self._cond:
            if self._closed:
                return False
            if self._tail_is_mark:
                self._items[-1] = item
                return True
            self._items.append(item)
            self._tail_is_mark = True
            return self._signal_locked()

    def take_nowait(self) -> list[T]:
        """Everything queued now (maybe nothing), in order; producers waiting for room go on."""
        with self._cond:
            items = self._items
            if not items:
                return []
            self._items = []
            self._weight = 0
            self._tail_is_mark = False
            self._signalled = False
            self._cond.notify_all()
            return items

    async def get_batch(self) -> list[T]:
        """Wait for at least one item and take everything queued; [] once closed and empty."""
        while True:
            items = self.take_nowait()
            if items or self._closed:
                return items
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> list[T]:
        """Refuse further items, release a waiting producer; returns the items left (lost)."""
        with self._cond:
            if self._closed:
                return []
            self._closed = True
            left = self._items
            self._count_lost_locked(self._weight, "closed with items queued")
            self._items = []
            self._weight = 0
            self._tail_is_mark = False
            self._cond.notify_all()
        if threading.get_ident() == self._loop_thread:
            self._ready.set()
        else:
            self._call_on_loop()
        return left

    # -- private --

    def _wait_for_room(self, weight: int) -> None:
        """Block (lock held by the caller) until `weight` fits, or the bridge is closed."""
        if self._closed or not self._weight or self._weight + weight <= self._capacity:
            return
        self.waits += 1
        self._producer_waiting = True
        try:
            while not self._closed and self._weight and self._weight + weight > self._capacity:
                self._cond.wait()
        finally:
            self._producer_waiting = False

    def _signal_locked(self) -> bool:
        """Wake the loop if it was not told yet; on a closed loop, count everything queued lost."""
        if self._signalled:
            return True
        self._signalled = True
        self.wakeups += 1
        if threading.get_ident() == self._loop_thread:
            self._ready.set()
            return True
        if self._call_on_loop():
            return True
        self._closed = True
        lost = self._weight
        self._items = []
        self._weight = 0
        self._cond.notify_all()  # another producer waiting for room must not wait forever
        self._count_lost_locked(lost, "event loop closed")
        return False

    def _call_on_loop(self) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop is closed: nobody will ever take what is queued
            return False
        return True

    def _count_lost_locked(self, weight: int, reason: str) -> None:
        if not weight:
            return
        log = _log.warning if not self.lost else _log.debug
        self.lost += weight
        log("bridge_items_lost", bridge=self._name, count=weight, total=self.lost, reason=reason)
