"""Commands from the WMS over MQTT: expected returns, replay, profile changes, and MQTT scans."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway.buffer.store import Buffer
from gateway.config import TcpScanner
from gateway.daemon.flow import PipelineFlow
from gateway.daemon.profile_switch import ProfileSwitcher
from gateway.daemon.shared import LOG_COMPONENT, Shared
from gateway.domain.events import BarcodeScan
from gateway.domain.signing import NonceCache, verify_command
from gateway.domain.wire import parse_rfc3339, rfc3339
from gateway.errors import BufferUnavailable, GatewayError, InputError
from gateway.logs import get_logger
from gateway.sync.forwarder import Forwarder, IncomingMessage

_log = get_logger(LOG_COMPONENT)

MAX_COMMAND_BYTES = 4 * 1024 * 1024
REPLAY_MAX_ROWS = 100_000
MAX_SCAN_CHARS = 4096
ANNOUNCEMENTS_QUEUED_MAX = 64


class CommandHandler:
    """Answers every message on the command and scan topics; bad input is a reply, never a crash."""

    def __init__(
        self,
        shared: Shared,
        buffer: Buffer,
        forwarder: Forwarder,
        flow: PipelineFlow,
        switcher: ProfileSwitcher,
    ) -> None:
        self._shared = shared
        self._buffer = buffer
        self._forwarder = forwarder
        self._flow = flow
        self._switcher = switcher
        self._nonces = NonceCache()
        self._announcements: asyncio.Queue[IncomingMessage] = asyncio.Queue(
            maxsize=ANNOUNCEMENTS_QUEUED_MAX
        )

    async def on_message(self, message: IncomingMessage) -> None:
        """Handle one incoming message: a scan, or a command answered on its result topic."""
        topics, counters = self._shared.topics, self._shared.tallies.counters
        device = topics.scan_device(message.topic)
        if device is not None:
            await self._mqtt_scan(device, message)
            return
        name = topics.command_name(message.topic)
        if message.topic == topics.site_expected_returns:
            name = "expected-returns"  # the WMS announces once for every door of the site
        if name is None:
            counters["messages_unexpected"] += 1
            return
        if name == "expected-returns":
            # Their own task, in order: a large announcement must not hold up scans and acks.
            await self._announcements.put(message)
            return
        await self._answer(name, message)

    async def announce_loop(self) -> None:
        """Apply queued expected-returns announcements one after the other, forever."""
        while True:
            message = await self._announcements.get()
            try:
                await self._answer("expected-returns", message)
            except BufferUnavailable:
                raise  # the buffer failed for good (a stall is waited out inside it): stop
            except GatewayError as exc:
                # As for other commands: what failed under this one may not fail the next.
                _log.warning("incoming_message_failed", topic=message.topic[:200], error=str(exc))

    async def _answer(self, name: str, message: IncomingMessage) -> None:
        counters = self._shared.tallies.counters
        try:
            payload = self._verified(name, message.payload)
            result = await self._command(name, payload)
        except InputError as exc:
            counters["commands_rejected"] += 1
            if exc.what == "signature":
                counters["commands_refused_signature"] += 1
            _log.warning("command_rejected", command=name[:40], what=exc.what, reason=exc.reason)
            result = {"ok": False, "error": exc.reason}
        else:
            counters["commands_applied"] += 1
        reply = json.dumps({"command": name[:40], **result}).encode()
        await self._forwarder.reply(message, name[:40], reply)

    def _verified(self, name: str, payload: bytes) -> bytes:
        """The command body, after its signature is checked when the config asks for signatures."""
        security = self._shared.config.security
        if security.command_key_env is None:
            return payload
        key = security.command_key()
        if key is None:
            # Fail closed: signatures are required but the key is missing from the environment.
            raise InputError(
                "signature", f"${security.command_key_env} is not set; refusing commands"
            )
        return verify_command(
            name[:40],
            payload,
            key,
            now_s=self._shared.clock(),
            window_s=security.command_window_s,
            nonces=self._nonces,
        )

    async def _command(self, name: str, payload: bytes) -> dict[str, Any]:
        body = command_body(name, payload)
        if name == "expected-returns":
            result = await self._flow.apply_expected_returns(body)
            return {"ok": True, "gateway": self._shared.config.gateway.id, **result}
        if name == "replay":
            return {"ok": True, **(await self._replay(body))}
        if name == "profile-apply":
            return await self._switcher.apply({**body, "source": "mqtt"})
        raise InputError("command", f"unknown command {name[:40]!r}")

    async def _replay(self, body: dict[str, Any]) -> dict[str, Any]:
        """Publish kept movements again, with their original ids: from a seq, or a time range."""
        if "from_seq" in body:
            from_seq = body["from_seq"]
            if isinstance(from_seq, bool) or not isinstance(from_seq, int) or from_seq < 0:
                raise InputError("replay", "'from_seq' must be a non-negative integer")
            rows = await self._buffer.rows_from(from_seq, REPLAY_MAX_ROWS, include_delivered=True)
            await self._forwarder.republish(rows)
            return {"republished": len(rows), "from_seq": from_seq}
        start, end = body.get("from"), body.get("to")
        if not isinstance(start, str) or not isinstance(end, (str, type(None))):
            raise InputError(
                "replay", "give 'from_seq', or 'from' (and optionally 'to') as RFC 3339"
            )
        start_s = parse_rfc3339(start)
        end_s = parse_rfc3339(end) if end is not None else self._shared.clock()
        if end_s < start_s:
            raise InputError("replay", "'to' is before 'from'")
        rows = await self._buffer.rows_between(start_s, end_s, REPLAY_MAX_ROWS)
        await self._forwarder.republish(rows)
        return {"republished": len(rows), "from": start, "to": rfc3339(end_s)}

    async def _mqtt_scan(self, device: str, message: IncomingMessage) -> None:
        text = message.payload.decode("utf-8", errors="replace").strip()
        station = self._mqtt_scan_station(device)
        if not text or len(text) > MAX_SCAN_CHARS or station is None:
            self._shared.tallies.counters["bad_mqtt_scans"] += 1
            _log.warning(
                "mqtt_scan_rejected", device=device[:64], reason="empty, too long or no station"
            )
            return
        await self._flow.ingest(
            BarcodeScan(
                reader=f"mqtt:{device}",
                station=station,
                data=text,
                at_s=self._shared.clock(),
                device=device,
            )
        )

    def _mqtt_scan_station(self, device: str) -> str | None:
        for reader in self._shared.config.readers:
            if isinstance(reader, TcpScanner) and device in reader.device_stations:
                return reader.device_stations[device]
        stations = self._shared.config.stations
        return stations[0].id if len(stations) == 1 else None


def command_body(name: str, payload: bytes) -> dict[str, Any]:
    """A command's JSON object body; InputError for anything too big, not JSON or not an object."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise InputError(name[:40], f"payload larger than {MAX_COMMAND_BYTES} bytes")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(name[:40], "payload is not JSON") from exc
    if not isinstance(body, dict):
        raise InputError(name[:40], "payload must be a JSON object")
    return body
