"""The TCP scanner listener: many network scanners and handhelds, one scan per line each.

Lines end at CR, LF or CRLF (as Zebra DataWedge's IP output and most handheld apps send). Each
client is a device, named by, in this order:
1. a hello line `device:NAME` sent as the client's FIRST line (NAME: letters, digits, `_.-`, up to
   64), which is not a scan; later lines starting with `device:` are ordinary scan data;
2. the configured `devices` mapping, keyed by `ip:port` or by `ip`;
3. otherwise `ip:port`.
`device_stations` maps a device name to its station, so handhelds at different stations can share
one listener; other devices take the reader's station. A bad line (too long, control bytes, not
UTF-8, or cut by the client closing before its end of line) is counted in `health.bad_input` and
the client goes on; a client silent for `idle_timeout_s` is closed. Failing to bind raises
ReaderUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from types import TracebackType
from typing import Final, Self

from gateway.domain.events import BarcodeScan
from gateway.errors import ReaderUnavailable
from gateway.logs import get_logger
from gateway.readers.base import ReaderHealth
from gateway.readers.framing import Rejected, ScanFramer

_log = get_logger("tcp_scanner")

HELLO_PREFIX: Final = "device:"
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_READ_BYTES: Final = 4096
_QUEUE_SCANS: Final = 1024


class TcpScannerDriver:
    """A TCP listener; each connected client is a device whose lines become BarcodeScans."""

    def __init__(
        self,
        reader_id: str,
        station: str,
        listen: str = "127.0.0.1:51000",
        *,
        devices: Mapping[str, str] | None = None,
        device_stations: Mapping[str, str] | None = None,
        max_line_bytes: int = 4096,
        idle_timeout_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._id = reader_id
        self._station = station
        self._host, self._port = parse_listen(listen)
        self._devices = dict(devices or {})
        self._device_stations = dict(device_stations or {})
        self._max_line_bytes = max_line_bytes
        self._idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._health = ReaderHealth(reader=reader_id, kind="tcp-scanner")
        self._health.detail["listen"] = listen
        self._server: asyncio.Server | None = None
        self._queue: asyncio.Queue[BarcodeScan] | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._sessions = 0

    @property
    def id(self) -> str:
        """The configured reader id."""
        return self._id

    @property
    def health(self) -> ReaderHealth:
        """Live health of this driver."""
        return self._health

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port when `listen` asked for port 0."""
        if self._server is None or not self._server.sockets:
            raise ReaderUnavailable(self._id, "not listening")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def client_count(self) -> int:
        """Clients connected now."""
        return len(self._clients)

    async def __aenter__(self) -> Self:
        """Bind and listen; ReaderUnavailable if the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("driver already entered")
        self._health.state = "connecting"
        self._queue = asyncio.Queue(_QUEUE_SCANS)
        try:
            self._server = await asyncio.start_server(self._on_client, self._host, self._port)
        except OSError as exc:
            self._health.state = "down"
            self._health.last_error = str(exc)
            raise ReaderUnavailable(
                self._id, f"cannot listen on {self._host}:{self._port}: {exc.strerror}"
            ) from exc
        if self._sessions:
            self._health.reconnects += 1
        self._sessions += 1
        self._health.state = "connected"
        self._health.last_error = None
        host, port = self.address
        _log.info("tcp_scanner_listening", reader=self._id, host=host, port=port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop listening and close every client."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await server.wait_closed()
        self._health.state = "idle"

    async def events(self) -> AsyncGenerator[BarcodeScan, None]:
        """Yield scans from every client, in the order they were received."""
        queue = self._queue
        if queue is None or self._server is None:
            raise ReaderUnavailable(self._id, "not listening")
        self._health.state = "inventorying"
        while True:
            yield await queue.get()

    def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Our own task per client (not asyncio's wrapper), so closing the listener can cancel it.
        task = asyncio.create_task(self._serve(reader, writer), name=f"tcp-scanner-{self._id}")
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)
        self._health.detail["clients"] = str(len(self._clients))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_ip, peer_port = (str(peer[0]), int(peer[1])) if peer else ("unknown", 0)
        address = f"{peer_ip}:{peer_port}"
        device = self._devices.get(address) or self._devices.get(peer_ip) or address
        _log.info("tcp_scanner_client_connected", reader=self._id, peer=address, device=device)
        try:
            await self._read_client(reader, address, device)
        except TimeoutError:
            _log.info("tcp_scanner_client_idle", reader=self._id, peer=address)
        except OSError as exc:
            _log.info("tcp_scanner_client_error", reader=self._id, peer=address, error=str(exc))
        finally:
            self._health.detail["clients"] = str(len(self._clients) - 1)
            writer.close()
            # The peer may already be gone; closing is best effort.
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _read_client(self, reader: asyncio.StreamReader, address: str, device: str) -> None:
        queue = self._queue
        assert queue is not None
        framer = ScanFramer("ANY", max_scan_bytes=self._max_line_bytes)
        first_line = True
        while True:
            async with asyncio.timeout(self._idle_timeout_s):
                chunk = await reader.read(_READ_BYTES)
            if not chunk:
                if framer.pending:
                    # A line cut by the connection closing may be a truncated barcode: not a scan.
                    self._health.bad_input += 1
                    _log.warning("scan_rejected", reader=self._id, device=device, reason="cut")
                _log.info("tcp_scanner_client_closed", reader=self._id, peer=address)
                return
            for frame in framer.feed(chunk):
                hello, first_line = first_line, False
                if isinstance(frame, Rejected):
                    self._health.bad_input += 1
                    _log.warning(
                        "scan_rejected",
                        reader=self._id,
                        device=device,
                        reason=frame.reason,
                        length=frame.length,
                    )
                    continue
                if hello and frame.data.startswith(HELLO_PREFIX):
                    name = frame.data.removeprefix(HELLO_PREFIX)
                    if _DEVICE_NAME.match(name):
                        device = name
                        _log.info(
                            "tcp_scanner_device_named", reader=self._id, peer=address, device=name
                        )
                    else:
                        self._health.bad_input += 1
                        _log.warning("tcp_scanner_bad_hello", reader=self._id, peer=address)
                    continue
                at_s = self._clock()
                self._health.events += 1
                self._health.last_event_at_s = at_s
                await queue.put(
                    BarcodeScan(
                        reader=self._id,
                        station=self._device_stations.get(device, self._station),
                        data=frame.data,
                        at_s=at_s,
                        device=device,
                    )
                )


def parse_listen(listen: str) -> tuple[str, int]:
    """Split `host:port` (or `[v6]:port`) into its parts; ValueError if malformed."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"listen address must be host:port, got {listen!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {listen!r}")
    return host.removeprefix("[").removesuffix("]"), port
