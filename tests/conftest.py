"""Shared fixtures: a real mosquitto per test, the conformance folder, the leak checks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT.parent / "shared" / "conformance"


@pytest.fixture(scope="session")
def conformance() -> Path:
    """The shared conformance data folder (../shared/conformance beside the repo)."""
    if not CONFORMANCE.is_dir():
        pytest.fail(f"conformance data not found at {CONFORMANCE}: clone with ../shared beside it")
    return CONFORMANCE


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running private mosquitto on a free loopback port."""
    with Mosquitto(tmp_path / "mosquitto") as running:
        yield running


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread of its own running."""
    before = set(threading.enumerate())
    yield
    deadline = 50
    leaked: list[threading.Thread] = []
    for _ in range(deadline):
        leaked = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.daemon and "asyncio" not in t.name
        ]
        if not leaked:
            return
        threading.Event().wait(0.1)
    pytest.fail(f"test leaked threads: {[t.name for t in leaked]}")


@pytest.fixture(autouse=True)
def _no_leaked_tasks(request: pytest.FixtureRequest) -> None:
    """Fail an async test that leaves a task of its own running."""
    # pytest-asyncio cancels what is left when it closes the test's loop, silently; the check
    # must run inside that loop, so async tests pull in the async fixture below.
    if request.node.get_closest_marker("asyncio") is not None:
        request.getfixturevalue("_tasks_all_done")


@pytest.fixture
async def _tasks_all_done() -> AsyncIterator[None]:
    """After the test, give its tasks a moment to end; fail naming those that did not."""
    yield
    current = asyncio.current_task()
    left: list[asyncio.Task[object]] = []
    for _ in range(50):
        left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not left:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"test leaked tasks: {sorted(t.get_name() for t in left)}")
