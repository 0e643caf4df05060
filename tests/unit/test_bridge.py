"""The thread bridge with real threads: blocks when full, one wake-up per batch, loses nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from gateway.runtime.bridge import ThreadBridge
from tests.support.own_loop import run_on_own_loop

WAIT_S = 5.0


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds (a thread's state the bridge exposes)."""
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.001)


def start(target: Callable[[], object], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


async def test_a_full_bridge_blocks_its_producer_until_the_consumer_takes() -> None:
    bridge: ThreadBridge[int] = ThreadBridge(3, name="t")
    returned = threading.Event()
    results: list[bool] = []

    def produce() -> None:
        results.extend(bridge.put(i) for i in range(3))
        results.append(bridge.put(3))  # over capacity: waits
        returned.set()

    thread = start(produce, "bridge-producer")
    await until(lambda: bridge.producer_waiting)
    assert not returned.is_set()
    assert bridge.queued_weight == 3
    assert await bridge.get_batch() == [0, 1, 2]
    assert await asyncio.to_thread(returned.wait, WAIT_S)
    assert await bridge.get_batch() == [3]
    assert results == [True] * 4
    assert bridge.waits == 1
    thread.join(WAIT_S)


async def test_weight_bounds_the_bridge_and_an_oversized_item_goes_in_alone() -> None:
    bridge: ThreadBridge[str] = ThreadBridge(10, name="t")
    done = threading.Event()

    def produce() -> None:
        bridge.put("six", 6)
        bridge.put("five", 5)  # 11 > 10: waits
        bridge.put("twenty", 20)  # heavier than the capacity: waits until empty, then alone
        done.set()

    thread = start(produce, "bridge-producer")
    await until(lambda: bridge.producer_waiting)
    assert await bridge.get_batch() == ["six"]
    await until(lambda: bridge.producer_waiting)
    assert await bridge.get_batch() == ["five"]
    assert await asyncio.to_thread(done.wait, WAIT_S)
    assert await bridge.get_batch() == ["twenty"]
    assert bridge.waits == 2
    thread.join(WAIT_S)


async def test_the_loop_is_woken_once_per_batch_and_takes_it_whole() -> None:
    bridge: ThreadBridge[int] = ThreadBridge(1000, name="t")
    loop = asyncio.get_running_loop()
    calls: list[object] = []
    original = loop.call_soon_threadsafe

    def counting(callback: Callable[..., object], *args: object, **kw: object) -> asyncio.Handle:
        if callback == bridge._ready.set:
            calls.append(callback)
        return original(callback, *args, **kw)  # type: ignore[arg-type]

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        first = start(lambda: [bridge.put(i) for i in range(100)], "bridge-producer")
        await asyncio.to_thread(first.join, WAIT_S)
        assert bridge.wakeups == 1
        assert len(calls) == 1
        assert await bridge.get_batch() == list(range(100))
        second = start(lambda: [bridge.put(i) for i in range(100, 150)], "bridge-producer")
        await asyncio.to_thread(second.join, WAIT_S)
        assert await bridge.get_batch() == list(range(100, 150))
        assert bridge.wakeups == 2
        assert len(calls) == 2
    finally:
        del loop.call_soon_threadsafe


async def test_get_batch_waits_for_a_put_from_a_thread() -> None:
    bridge: ThreadBridge[str] = ThreadBridge(5, name="t")
    waiting = asyncio.create_task(bridge.get_batch(), name="bridge-consumer")
    await asyncio.sleep(0)
    assert not waiting.done()
    start(lambda: bridge.put("x"), "bridge-producer").join(WAIT_S)
    assert await asyncio.wait_for(waiting, WAIT_S) == ["x"]


async def test_close_releases_a_waiting_producer_and_counts_what_is_left() -> None:
    bridge: ThreadBridge[int] = ThreadBridge(2, name="t")
    results: list[bool] = []

    def produce() -> None:
        results.extend(bridge.put(i) for i in range(3))
        results.append(bridge.put(9))  # after close: refused at once

    thread = start(produce, "bridge-producer")
    await until(lambda: bridge.producer_waiting)
    assert bridge.close() == [0, 1]
    await asyncio.to_thread(thread.join, WAIT_S)
    assert not thread.is_alive()
    assert results == [True, True, False, False]
    assert bridge.lost == 4  # two left queued, two refused
    assert await bridge.get_batch() == []
    assert bridge.close() == []  # a second close is harmless


async def test_close_returns_the_items_nobody_took() -> None:
    bridge: ThreadBridge[int] = ThreadBridge(5, name="t")
    start(lambda: [bridge.put(i) for i in range(3)], "bridge-producer").join(WAIT_S)
    assert bridge.close() == [0, 1, 2]
    assert bridge.lost == 3
    assert bridge.closed
    assert await bridge.get_batch() == []
    assert not bridge.put_mark(7)


async def test_a_slow_consumer_gets_every_item_in_order() -> None:
    bridge: ThreadBridge[int] = ThreadBridge(64, name="t")
    total = 20_000
    produced = threading.Event()

    def produce() -> None:
        for i in range(total):
            assert bridge.put(i)
        produced.set()

    thread = start(produce, "bridge-producer")
    got: list[int] = []
    while len(got) < total:
        # Slow: let the producer fill the bridge and block before taking each batch.
        await until(lambda: bridge.producer_waiting or produced.is_set())
        got.extend(await bridge.get_batch())
    assert got == list(range(total))
    assert bridge.waits > 0
    assert bridge.lost == 0
    thread.join(WAIT_S)


async def test_consecutive_marks_keep_the_latest_and_never_block() -> None:
    bridge: ThreadBridge[str] = ThreadBridge(1, name="t")

    def produce() -> None:
        bridge.put("read-1")
        bridge.put_mark("mark-1")
        bridge.put_mark("mark-2")  # replaces mark-1
        bridge.put_mark("mark-3")  # replaces mark-2: the bridge is full, marks still go in

    start(produce, "bridge-producer").join(WAIT_S)
    assert await bridge.get_batch() == ["read-1", "mark-3"]
    start(lambda: bridge.put_mark("mark-4"), "bridge-producer").join(WAIT_S)
    assert bridge.wakeups == 2  # a mark into an empty bridge wakes the loop
    assert await bridge.get_batch() == ["mark-4"]


async def test_a_put_on_the_loop_thread_never_blocks() -> None:
    bridge: ThreadBridge[int] = ThreadBridge(1, name="t")
    assert bridge.put(1)
    assert bridge.put(2)  # over capacity, but waiting here would stop the loop that takes
    assert await bridge.get_batch() == [1, 2]


def test_items_put_after_the_loop_closed_are_counted_lost() -> None:
    async def make() -> ThreadBridge[int]:
        return ThreadBridge(5, name="t")

    bridge = run_on_own_loop(make())
    results: list[bool] = []
    start(lambda: results.extend([bridge.put(1), bridge.put(2)]), "bridge-producer").join(WAIT_S)
    assert results == [False, False]
    assert bridge.lost == 2
    assert bridge.closed
