"""Profile switching on a running LLRP reader: apply, watch the read rate, roll back, record."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway.buffer.keys import PROFILE_HISTORY_KEY
from gateway.buffer.store import Buffer
from gateway.config import LlrpReader
from gateway.daemon.shared import LOG_COMPONENT, Shared
from gateway.domain.wire import rfc3339
from gateway.errors import ConfigError, InputError
from gateway.logs import get_logger
from gateway.profiles import (
    DEFAULT_PROFILE_DIR,
    Profile,
    diff_profiles,
    find_profile,
    parse_profile,
)
from gateway.runtime.supervisor import ReaderSlot, wait_for_session
from gateway.sync.forwarder import Forwarder

_log = get_logger(LOG_COMPONENT)

PROFILE_HISTORY_MAX = 1000
PROFILE_SETTLE_S = 20.0
# Below this many reads per second before a change, a drop says nothing about the new profile.
MIN_RATE_FOR_ROLLBACK = 1.0


class ProfileSwitcher:
    """Puts a new profile in force on one reader at a time and keeps the history of changes."""

    def __init__(self, shared: Shared, buffer: Buffer, forwarder: Forwarder) -> None:
        self._shared = shared
        self._buffer = buffer
        self._forwarder = forwarder
        self._lock = asyncio.Lock()

    async def apply(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply a profile to a running LLRP reader; roll back if rejected or if reads drop."""
        config, clock = self._shared.config, self._shared.clock
        reader_id = request.get("reader")
        slot = next((s for s in self._shared.slots if s.reader == reader_id), None)
        reader = next((r for r in config.readers if r.id == reader_id), None)
        if slot is None or not isinstance(reader, LlrpReader):
            raise InputError("profile-apply", f"no LLRP reader {str(reader_id)[:64]!r}")
        requested_by = str(request.get("requested_by") or "unknown")[:128]
        new = self._requested_profile(request)
        async with self._lock:
            old = self._shared.profiles[reader.id]
            entry: dict[str, Any] = {
                "at": rfc3339(clock()),
                "reader": reader.id,
                "requested_by": requested_by,
                "source": str(request.get("source", "unknown")),
                "client": str(request["client"])[:64] if request.get("client") else None,
                "old": {"name": old.name, "version": old.version},
                "new": {"name": new.name, "version": new.version},
                "changes": [list(c) for c in diff_profiles(old, new)],
            }
            baseline = self._read_rate(slot)
            outcome, reason = await self._switch(slot, reader, new)
            if outcome == "applied":
                after = await self._watch_rate(slot)
                if baseline >= MIN_RATE_FOR_ROLLBACK and after < baseline * (
                    1 - config.profiles.rollback_drop_share
                ):
                    outcome = "rolled-back"
                    reason = f"read rate fell from {baseline:.1f}/s to {after:.1f}/s"
            if outcome != "applied":
                back, _ = await self._switch(slot, reader, old)
                entry["rollback"] = back
            entry.update(outcome=outcome, reason=reason)
            await self._record(entry)
        _log.info("profile_change", **{k: v for k, v in entry.items() if k != "changes"})
        return {"ok": outcome == "applied", **entry}

    async def apply_local(self, request: dict[str, Any]) -> dict[str, Any]:
        """`apply` for the local health endpoint: a bad request is an answer, not an error."""
        try:
            return await self.apply({**request, "source": "local"})
        except InputError as exc:
            return {"ok": False, "error": exc.reason}

    def _requested_profile(self, request: dict[str, Any]) -> Profile:
        profile = request.get("profile")
        directory = self._shared.config.profiles.dir or DEFAULT_PROFILE_DIR
        try:
            if isinstance(profile, dict):
                return parse_profile(profile, source="profile")
            name = profile if isinstance(profile, str) else request.get("name")
            if not isinstance(name, str) or not name.replace("-", "").isalnum():
                raise InputError("profile-apply", "give 'profile' (an object) or 'name'")
            return find_profile(name, directory)
        except ConfigError as exc:
            raise InputError("profile-apply", f"invalid profile: {exc.key}: {exc.reason}") from exc

    async def _switch(
        self, slot: ReaderSlot, reader: LlrpReader, profile: Profile
    ) -> tuple[str, str | None]:
        """Put the profile in force with a new reader session; (outcome, why)."""
        self._shared.profiles[reader.id] = profile
        sessions = slot.sessions
        slot.request_restart()
        state = await wait_for_session(slot, sessions, PROFILE_SETTLE_S)
        if state in ("inventorying", "connected"):
            return "applied", None
        if state == "rejected-config":
            return "rejected", slot.last_error
        return "failed", f"reader {state} after the change: {slot.last_error}"

    async def _watch_rate(self, slot: ReaderSlot) -> float:
        watch_s = self._shared.config.profiles.rollback_watch_s
        start = slot.health().events
        await asyncio.sleep(watch_s)
        return (slot.health().events - start) / watch_s

    def _read_rate(self, slot: ReaderSlot) -> float:
        samples = self._shared.tallies.read_counts.get(slot.reader)
        if not samples or len(samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    async def _record(self, entry: dict[str, Any]) -> None:
        raw = await self._buffer.kv_get(PROFILE_HISTORY_KEY)
        history: list[dict[str, Any]] = json.loads(raw) if raw else []
        history = [*history, entry][-PROFILE_HISTORY_MAX:]
        await self._buffer.kv_put(PROFILE_HISTORY_KEY, json.dumps(history).encode())
        self._shared.tallies.counters[f"profile_changes_{entry['outcome']}"] += 1
        event = {"event": "profile-change", "gateway": self._shared.config.gateway.id, **entry}
        await self._forwarder.publish_event(json.dumps(event, default=str).encode())
