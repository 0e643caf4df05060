"""Commands from the WMS over MQTT: expected returns, replay, profile changes.

The forwarder's inbox serves commands and announcements in two lanes, one message at a time each,
and acknowledges a message once `on_message` has returned: applied and its reply queued, or its
error reply queued. MQTT scans are a reader's input (`readers/mqtt`), not commands.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.buffer.store import Buffer
from gateway.daemon.flow import PipelineFlow
from gateway.daemon.profile_switch import ProfileSwitcher
from gateway.daemon.shared import LOG_COMPONENT, Shared
from gateway.domain.signing import NonceCache, verify_command
from gateway.domain.wire import parse_rfc3339, rfc3339
from gateway.errors import InputError
from gateway.logs import get_logger
from gateway.sync.forwarder import Forwarder, IncomingMessage

_log = get_logger(LOG_COMPONENT)

MAX_COMMAND_BYTES = 4 * 1024 * 1024
REPLAY_MAX_ROWS = 100_000


class CommandHandler:
    """Answers every message on the command topics; bad input is a reply, never a crash."""

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

    async def on_message(self, message: IncomingMessage) -> None:
        """Apply one command and queue its reply on its result topic (an error is a reply too)."""
        topics, counters = self._shared.topics, self._shared.tallies.counters
        name = topics.command_name(message.topic)
        if message.topic == topics.site_expected_returns:
            name = "expected-returns"  # the WMS announces once for every door of the site
        if name is None:
            counters["messages_unexpected"] += 1
            return
        await self._answer(name, message)

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
