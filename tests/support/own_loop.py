"""The one place tests start an event loop by hand; async tests run on pytest-asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_on_own_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end on a fresh loop that is closed afterwards."""
    # For what pytest-asyncio's per-test loop cannot serve: a loop per hypothesis example whose
    # close joins the executor threads the example checks for, and a server on its own thread.
    return asyncio.run(coroutine)
