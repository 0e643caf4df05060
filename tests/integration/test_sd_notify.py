"""sd_notify as systemd sees it: a unix datagram socket playing NOTIFY_SOCKET for the daemon."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.daemon import Daemon
from gateway.runtime.notify import SystemdNotifier
from tests.support.broker import Mosquitto
from tests.support.daemon import DaemonProcess, write_config

pytestmark = pytest.mark.slow

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound unix datagram socket in a short path (sun_path holds 108 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    path = str(directory / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        Path(path).unlink()
        directory.rmdir()


def _receive(sock: socket.socket, timeout_s: float) -> list[tuple[float, str]]:
    """Every datagram arriving within timeout_s, with its arrival time (monotonic)."""
    got: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        got.append((time.monotonic(), data.decode()))
    return got


def _wait_for(sock: socket.socket, line: str, timeout_s: float) -> list[str]:
    """Datagrams until one has this line (or fail); returns all seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        seen.append(data)
        if line in data.splitlines():
            return seen
    raise AssertionError(f"{line!r} not received in {timeout_s}s; got {seen!r}")


def _config(tmp_path: Path, broker: Mosquitto) -> Path:
    return write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[{"id": "door-3", "kind": "receiving"}],
        readers=[],
    )


def test_ready_status_watchdog_stall_and_stopping(
    tmp_path: Path,
    broker: Mosquitto,
    notify_socket: tuple[socket.socket, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock, path = notify_socket
    monkeypatch.delenv("WATCHDOG_PID", raising=False)  # the child must not inherit ours
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    daemon = DaemonProcess(_config(tmp_path, broker), tmp_path / "daemon.log", env=env)
    daemon.start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    try:
        seen = _wait_for(sock, "READY=1", 30)
        ready = next(d for d in seen if "READY=1" in d.splitlines())
        status = [line for line in ready.splitlines() if line.startswith("STATUS=")]
        assert status, ready
        assert "broker=" in status[0]
        assert "pending=" in status[0]

        got = _receive(sock, 3.0)
        pings = [t for t, d in got if "WATCHDOG=1" in d.splitlines()]
        assert len(pings) >= 3, got  # ~6 expected at 0.5 s

        # The whole process stalls: no pings while stopped.
        os.kill(pid, signal.SIGSTOP)
        try:
            _receive(sock, 0.3)  # what was already in flight
            stalled = _receive(sock, 2.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert not [d for _, d in stalled if "WATCHDOG=1" in d.splitlines()], stalled
        _wait_for(sock, "WATCHDOG=1", 5)
        again = _receive(sock, 1.5)
        assert [d for _, d in again if "WATCHDOG=1" in d.splitlines()], "pings did not resume"

        assert daemon.terminate() == 0
        rest = [d for _, d in _receive(sock, 0.5)]
        assert any("STOPPING=1" in d.splitlines() for d in rest), rest
    finally:
        if daemon.alive():
            daemon.kill()


async def test_watchdog_pings_only_while_loop_runs_and_forwarder_lives(
    tmp_path: Path, broker: Mosquitto, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    daemon = Daemon(load_config(_config(tmp_path, broker)), install_signals=False)
    notifier = SystemdNotifier(path)
    daemon._notifier = notifier  # the test plays systemd's socket
    arrivals: list[tuple[float, str]] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            arrivals.extend(_receive(sock, 0.2))

    listener = threading.Thread(target=listen, name="notify-listener")
    listener.start()

    try:
        forwarder = asyncio.create_task(_forever(), name="fake-forwarder")
        watchdog = asyncio.create_task(
            daemon._watchdog(0.1, forwarder),  # the mechanism under test
            name="watchdog",
        )
        await asyncio.sleep(0.6)
        block_start = time.monotonic()
        time.sleep(1.5)  # a stalled event loop
        block_end = time.monotonic()
        await asyncio.sleep(0.6)
        forwarder.cancel()
        await asyncio.wait_for(watchdog, 2.0)  # returns once the forwarder is gone
        forwarder_gone = time.monotonic()
        time.sleep(0.5)
    finally:
        done.set()
        listener.join(timeout=5)
        notifier.close()
    pings = [t for t, d in arrivals if d == "WATCHDOG=1"]
    assert len([t for t in pings if t < block_start]) >= 3, pings
    # A ping at most one scheduling slice late is the one due when the block began.
    during = [t for t in pings if block_start + 0.15 < t < block_end - 0.05]
    assert during == [], (during, block_start, block_end)
    assert len([t for t in pings if block_end < t < forwarder_gone]) >= 2, pings
    assert [t for t in pings if t > forwarder_gone + 0.05] == [], "pinged without a forwarder"


async def _forever() -> None:
    await asyncio.Event().wait()
