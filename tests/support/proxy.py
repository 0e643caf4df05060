"""A TCP proxy on loopback that a test controls: pass, drop, blackhole (no FIN), slow."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from typing import Literal, Self

from tests.support.broker import free_port

Mode = Literal["pass", "drop", "blackhole", "slow"]


class Proxy:
    """Forwards 127.0.0.1:port to a target; the mode changes what happens to traffic.

    pass: bytes flow. drop: every connection is reset now and new ones are refused (RST).
    blackhole: connections stay open but bytes vanish in both directions, no FIN (a dead link).
    slow: bytes flow with `delay_s` added per chunk.
    """

    def __init__(self, target_port: int, delay_s: float = 0.2) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.mode: Mode = "pass"
        self.delay_s = delay_s
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._threads: list[threading.Thread] = []
        self.connections = 0

    def set_mode(self, mode: Mode) -> None:
        """Change what happens to traffic from now on."""
        self.mode = mode
        if mode == "drop":
            self._reset_all()

    def start(self) -> Self:
        """Start accepting (one thread accepts, one pumps bytes)."""
        for target, name in ((self._accept_loop, "proxy-accept"), (self._pump_loop, "proxy-pump")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Close everything and join the threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._reset_all()
        self._listener.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "drop":
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                _reset(client)
                continue
            client.setblocking(False)
            upstream.setblocking(False)
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1

    def _pump_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pairs = list(self._pairs)
            if not pairs:
                time.sleep(0.01)
                continue
            selector = selectors.DefaultSelector()
            for a, b in pairs:
                with contextlib.suppress(ValueError, KeyError, OSError):
                    selector.register(a, selectors.EVENT_READ, (a, b))
                    selector.register(b, selectors.EVENT_READ, (b, a))
            try:
                ready = selector.select(timeout=0.05)
            except OSError:
                ready = []
            for key, _ in ready:
                source, sink = key.data
                self._move(source, sink)
            selector.close()

    def _move(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            data = source.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_pair(source)
            return
        if self.mode == "blackhole":
            return
        if self.mode == "slow":
            time.sleep(self.delay_s)
        try:
            sink.setblocking(True)
            sink.sendall(data)
            sink.setblocking(False)
        except OSError:
            self._close_pair(source)

    def _close_pair(self, member: socket.socket) -> None:
        with self._lock:
            for pair in list(self._pairs):
                if member in pair:
                    self._pairs.remove(pair)
                    for sock in pair:
                        with contextlib.suppress(OSError):
                            sock.close()

    def _reset_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _reset(a)
            _reset(b)


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
