"""Technicians' commands against a running daemon: apply a profile, read the change history."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import Config, is_loopback_listen, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.profiles import DEFAULT_PROFILE_DIR, resolve_profile

if TYPE_CHECKING:
    from gateway.buffer.store import Buffer


def apply_profile_cli(
    config_path: Path, reader: str, name: str, *, requested_by: str | None
) -> int:
    """Validate the profile here, then ask the local daemon to apply it; 0 applied, 1 not."""
    config = load_config(config_path)
    profile = resolve_profile(name, config.profiles.dir or DEFAULT_PROFILE_DIR)
    if not config.health.enabled:
        raise ConfigError("health.enabled", "profiles apply talks to the daemon's local endpoint")
    user = requested_by or getpass.getuser()
    request = {
        "reader": reader,
        "profile": profile.model_dump(mode="json"),
        "requested_by": user,
        "source": "cli",
    }
    password = None
    if not is_loopback_listen(config.health.listen):
        # The console's login guards the actions too: sign in as the requester first.
        password = config.console.password()
        if password is None:
            raise ConfigError(
                "console.password_env",
                f"set ${config.console.password_env} to sign in to a non-loopback endpoint",
            )
    result = _post(
        config,
        "profile-apply",
        request,
        login=None if password is None else (user, password),
    )
    print(json.dumps(result, indent=2))
    return 0 if result.get("ok") else 1


def profile_history_cli(config_path: Path, reader: str | None) -> int:
    """Print every recorded profile change (optionally of one reader), oldest first."""
    from gateway.buffer.keys import PROFILE_HISTORY_KEY  # noqa: PLC0415 - the buffer loads only here

    config = load_config(config_path)

    async def read() -> list[dict[str, Any]]:
        async with read_only_buffer(config) as buffer:
            raw = await buffer.kv_get(PROFILE_HISTORY_KEY)
        entries: list[dict[str, Any]] = json.loads(raw) if raw else []
        return entries

    for entry in asyncio.run(read()):
        if reader is None or entry.get("reader") == reader:
            print(json.dumps(entry))
    return 0


@contextlib.asynccontextmanager
async def read_only_buffer(config: Config) -> AsyncIterator[Buffer]:
    """The daemon's buffer, opened read-only (safe beside a running daemon)."""
    from gateway.buffer.keys import buffer_path  # noqa: PLC0415
    from gateway.buffer.store import Buffer  # noqa: PLC0415

    buffer = await Buffer.open(
        buffer_path(config.gateway.state_dir), max_bytes=config.buffer.max_bytes, read_only=True
    )
    try:
        yield buffer
    finally:
        await buffer.close()


def buffer_stats(config: Config) -> dict[str, Any]:
    """`Buffer.stats()` of the daemon's buffer as a plain dict."""

    async def read() -> dict[str, Any]:
        async with read_only_buffer(config) as buffer:
            stats = await buffer.stats()
        return {name: getattr(stats, name) for name in stats.__dataclass_fields__}

    return asyncio.run(read())


def _post(
    config: Config, action: str, body: dict[str, Any], *, login: tuple[str, str] | None = None
) -> dict[str, Any]:
    base = _base_url(config)
    url = f"{base}/actions/{action}"
    headers = {"Content-Type": "application/json"}
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=_pinned_tls(config)),
        urllib.request.HTTPCookieProcessor(),
    )
    try:
        if login is not None:
            user, password = login
            signed_in = urllib.request.Request(  # noqa: S310 - http:// built from the config
                f"{base}/login",
                data=json.dumps({"user": user, "password": password}).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with opener.open(signed_in, timeout=10) as response:
                headers["X-CSRF-Token"] = json.loads(response.read())["csrf"]
        request = urllib.request.Request(  # noqa: S310 - http:// built from the config
            url, data=json.dumps(body).encode(), method="POST", headers=headers
        )
        with opener.open(request, timeout=120) as response:
            result: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        result = json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError) as exc:
        print(f"error: the daemon does not answer on {url}: {exc}", file=sys.stderr)
        raise GatewayError("daemon not reachable") from exc
    return result


def _base_url(config: Config) -> str:
    host, _, port = config.health.listen.rpartition(":")
    host = host.strip("[]")
    # A wildcard listen is reached on this machine through loopback.
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - compared, not bound
        host = "127.0.0.1"
    scheme = "https" if config.console.tls_cert is not None else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _pinned_tls(config: Config) -> ssl.SSLContext | None:
    """Trust exactly the daemon's own certificate (read from its config), whatever its names."""
    if config.console.tls_cert is None:
        return None
    # The CLI runs beside the daemon and dials it by address: the certificate file it was
    # configured with is the one to expect, so it is the only trust anchor, names aside.
    context = ssl.create_default_context(cafile=str(config.console.tls_cert))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = False
    return context


def status_cli(config_path: Path) -> int:
    """Print the gateway's state for a person: from the running daemon, else from its buffer."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    config = load_config(config_path)
    console = Console()
    health = _get_health(config) if config.health.enabled else None
    if health is None:
        console.print(
            "[bold]daemon:[/] not answering on its health endpoint; showing the buffer file"
        )
        health = {"buffer": buffer_stats(config), "readers": {}, "healthy": None}
    else:
        verdict = (
            "healthy" if health.get("healthy") else "UNHEALTHY: " + "; ".join(health["reasons"])
        )
        console.print(f"[bold]daemon:[/] running, {verdict}")
    broker = health.get("broker") or {}
    if broker:
        console.print(f"[bold]broker:[/] {'connected' if broker.get('connected') else 'DOWN'}")
    readers = Table(title="readers")
    for column in ("reader", "kind", "state", "events", "bad input", "reconnects", "last error"):
        readers.add_column(column)
    for reader in (health.get("readers") or {}).values():
        readers.add_row(
            *(
                _cell(reader.get(k))
                for k in (
                    "reader",
                    "kind",
                    "state",
                    "events",
                    "bad_input",
                    "reconnects",
                    "last_error",
                )
            )
        )
    console.print(readers)
    buffer = Table(title="buffer")
    buffer.add_column("what")
    buffer.add_column("value", justify="right")
    for key, value in (health.get("buffer") or {}).items():
        buffer.add_row(key, _cell(value))
    console.print(buffer)
    kpi = health.get("kpi")
    if kpi:
        console.print_json(json.dumps(kpi, default=str))
    return 0


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _get_health(config: Config) -> dict[str, Any] | None:
    url = f"{_base_url(config)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3, context=_pinned_tls(config)) as response:  # noqa: S310 - http(s):// built from the config
            result: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        result = json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return result
