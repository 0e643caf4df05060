"""The daemon as the technicians' console sees it: the one adapter between daemon and page."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.buffer.keys import PROFILE_HISTORY_KEY
from gateway.config import Config, is_loopback_listen
from gateway.console.activity import RecentActivity
from gateway.console.lookup import query_item
from gateway.console.tags import TagsInView
from gateway.console.web import Console
from gateway.daemon.running import Running
from gateway.daemon.shared import Shared
from gateway.domain.expected import ExpectedReturns
from gateway.errors import ConfigError
from gateway.logs import get_logger
from gateway.profiles import DEFAULT_PROFILE_DIR, Profile
from gateway.runtime.health import split_listen
from gateway.runtime.hosts import HostAllowList

_log = get_logger("console")


class DaemonConsoleView:
    """A `ConsoleSource` over the running daemon: reads its state, asks it to apply profiles."""

    def __init__(
        self, shared: Shared, running: Running, health: Callable[[], Mapping[str, Any]]
    ) -> None:
        self._shared = shared
        self._running = running
        self._health = health

    @property
    def tags(self) -> TagsInView:
        """The daemon's tags-in-view table."""
        return self._shared.tallies.tags_in_view

    @property
    def activity(self) -> RecentActivity:
        """The daemon's recent visits and movements."""
        return self._shared.tallies.activity

    def health(self) -> Mapping[str, Any]:
        """The daemon's health (as on the status topic)."""
        return self._health()

    def profiles_in_force(self) -> Mapping[str, Profile]:
        """Each LLRP reader's profile in force."""
        return dict(self._shared.profiles)

    def profile_dir(self) -> Path:
        """The configured profile folder, else the shipped one."""
        return self._shared.config.profiles.dir or DEFAULT_PROFILE_DIR

    async def profile_history(self) -> list[dict[str, Any]]:
        """The profile history the daemon keeps in its buffer, oldest first."""
        raw = await self._running.buffer.kv_get(PROFILE_HISTORY_KEY)
        entries: list[dict[str, Any]] = json.loads(raw) if raw else []
        return entries

    async def apply_profile(self, request: dict[str, Any]) -> dict[str, Any]:
        """The daemon's own apply: capability checks, rollback, history, event."""
        return await self._running.switcher.apply(request)

    async def expected_returns(self, query: str) -> ExpectedReturns | None:
        """The RMA named by `query`, or those its item can match, read from the buffer."""
        return await self._running.flow.expected.lookup_registry(query_item(query), query)


def console_for(
    config: Config, shared: Shared, running: Running, health: Callable[[], Mapping[str, Any]]
) -> Console:
    """The daemon's console; ConfigError when a non-loopback listen has no password set."""
    login_required = not is_loopback_listen(config.health.listen)
    password = config.console.password()
    if login_required and password is None:
        raise ConfigError(
            "console.password_env",
            f"health.listen {config.health.listen!r} is not loopback and "
            f"${config.console.password_env} is not set: refusing to serve without a login",
        )
    return Console(
        DaemonConsoleView(shared, running, health),
        login_required=login_required,
        password=password,
        update_interval_s=config.console.update_interval_s,
        parked_after_s=config.console.parked_after_s,
    )


def console_hosts(config: Config) -> HostAllowList:
    """The Host names the gateway's HTTP server answers: its own, plus `[console] hosts`."""
    return HostAllowList(split_listen(config.health.listen)[0], config.console.hosts)


def console_tls(config: Config) -> ssl.SSLContext | None:
    """The server's SSL context from `[console] tls_cert`/`tls_key`; None for plain HTTP."""
    console = config.console
    if console.tls_cert is None or console.tls_key is None:
        if not is_loopback_listen(config.health.listen):
            # Allowed (a closed dock network may accept it) but said: password and cookie in clear.
            _log.warning("console_plain_http", listen=config.health.listen, advice="set tls_cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(console.tls_cert), str(console.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("console.tls_cert", f"cannot load the certificate or key: {exc}") from exc
    return context
