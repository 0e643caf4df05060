"""The daemon as a real subprocess with a config file, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[2]


def toml_value(value: object) -> str:
    """A Python value as TOML (enough for test configs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def write_config(
    path: Path,
    *,
    broker_port: int,
    state_dir: Path,
    stations: list[dict[str, Any]],
    readers: list[dict[str, Any]],
    mqtt: dict[str, Any] | None = None,
    buffer: dict[str, Any] | None = None,
    gateway_id: str = "dock-3",
    site: str = "milan-returns",
    extra: str = "",
) -> Path:
    """Write a TOML config for a test daemon (fast reconnects, frequent status)."""
    mqtt_section = {
        "host": "127.0.0.1",
        "port": broker_port,
        "topic_prefix": "returns",
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        "status_interval_s": 1.0,
        "keepalive_s": 5,
        **(mqtt or {}),
    }
    lines = [
        "[gateway]",
        f"id = {toml_value(gateway_id)}",
        f"site = {toml_value(site)}",
        f"state_dir = {toml_value(state_dir)}",
        "[health]",
        "enabled = false",
        "[mqtt]",
        *(f"{k} = {toml_value(v)}" for k, v in mqtt_section.items()),
    ]
    if buffer:
        lines += ["[buffer]", *(f"{k} = {toml_value(v)}" for k, v in buffer.items())]
    for station in stations:
        lines += ["[[stations]]", *(f"{k} = {toml_value(v)}" for k, v in station.items())]
    for reader in readers:
        lines += ["[[readers]]", *(f"{k} = {toml_value(v)}" for k, v in reader.items())]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def tcp_handheld(
    port: int, station: str = "door-3", reader_id: str = "handhelds"
) -> dict[str, Any]:
    """A tcp-scanner reader on loopback `port` for one station (the handheld of many tests)."""
    return {
        "kind": "tcp-scanner",
        "id": reader_id,
        "listen": f"127.0.0.1:{port}",
        "station": station,
    }


class DaemonProcess:
    """`gateway run --config FILE` in a subprocess, logs (JSON lines) to a file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log = log
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the daemon (appending to the log file)."""
        assert self.proc is None or self.proc.poll() is not None
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "run",
                    "--config",
                    str(self.config),
                    "--log-format",
                    "json",
                    "--log-level",
                    "DEBUG",
                ],
                stdout=log,
                stderr=log,
                cwd=ROOT,
                env=env,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no clean-up at all."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_events(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far."""
        events = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def wait_for_log(
        self, event: str, timeout_s: float = 20.0, count: int = 1
    ) -> list[dict[str, Any]]:
        """Wait until the log holds `count` lines with this event name."""
        deadline = time.monotonic() + timeout_s
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = [e for e in self.log_events() if e.get("event") == event]
            if len(found) >= count:
                return found
            if not self.alive():
                break
            time.sleep(0.1)
        raise AssertionError(
            f"log event {event!r} x{count} not seen (saw {len(found)}); log tail:\n"
            + "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.alive():
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()


def buffer_stats(config: Path) -> dict[str, Any]:
    """`gateway buffer stats --config FILE` as a dict; `pending` is -1 while the command fails."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "buffer", "stats", "--config", str(config)],
        capture_output=True,
        check=False,
        cwd=ROOT,
        timeout=30,
    )
    if out.returncode != 0:
        return {"pending": -1, "gaps_total": 0, "refused_events_total": 0, "last_seq": 0}
    stats: dict[str, Any] = json.loads(out.stdout)
    return stats


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    """Poll a test condition (never product code) until true or fail naming it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def run_gateway(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` from the repository root, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=timeout_s,
    )


def http_get(url: str) -> tuple[int, str]:
    """GET a local URL: the status and the body as text, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
