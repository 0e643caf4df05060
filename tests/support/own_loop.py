"""The one place tests start an event loop by hand; async tests run on pytest-asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

T = TypeVar("T")
S = TypeVar("S")


def run_on_own_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end on a fresh loop that is closed afterwards."""
    # For what pytest-asyncio's per-test loop cannot serve: a loop per hypothesis example whose
    # close joins the executor threads the example checks for, and a server on its own thread.
    return asyncio.run(coroutine)


class ServedInThread(Generic[S]):
    """An async context manager (a simulator, an emulator) entered on its own loop in a thread.

    `with ServedInThread(server) as entered:` starts the thread and returns what the server's
    `__aenter__` gave once it has; leaving stops the loop and joins the thread.
    """

    def __init__(self, server: AbstractAsyncContextManager[S], name: str = "served") -> None:
        self._server = server
        self._entered: S | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: run_on_own_loop(self._serve()), name=name)

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run `fn(*args)` on the server's loop (its state is the loop's to change)."""
        assert self._loop is not None, "not started"
        self._loop.call_soon_threadsafe(fn, *args)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._server as entered:
            self._entered = entered
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> S:
        self._thread.start()
        if not self._ready.wait(10) or self._entered is None:
            raise RuntimeError(f"{self._thread.name} did not start")
        return self._entered

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)
