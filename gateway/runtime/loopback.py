"""Loopback TCP ports: a free one, whether one answers, and waiting until one does."""

from __future__ import annotations

import socket
import time

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts a TCP connection on host:port within `timeout_s`."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout_s: float = 10.0, host: str = LOOPBACK) -> None:
    """Block until something accepts connections on the port; raise TimeoutError if none does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_answers(host, port, timeout_s=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(host, port, timeout_s)
