"""The systemd unit passes `systemd-analyze verify` with its hardening in place."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "dock-gateway.service"


def test_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze missing: scripts/test installs the systemd package")
    gateway = Path(sys.executable).parent / "gateway"
    assert gateway.exists(), "the gateway console script must be installed in the venv"
    # Verify the real unit, with ExecStart pointed at this checkout's installed command.
    text = UNIT.read_text(encoding="utf-8").replace(
        "/opt/dock-gateway/.venv/bin/gateway", str(gateway)
    )
    unit = tmp_path / "dock-gateway.service"
    unit.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "dock-gateway.service" not in done.stderr, done.stderr


def test_unit_keeps_its_contract() -> None:
    text = UNIT.read_text(encoding="utf-8")
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=dock-gateway",
        "StateDirectory=dock-gateway",
        "ConfigurationDirectory=dock-gateway",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "DevicePolicy=closed",
        "DeviceAllow=char-ttyACM rw",
        "DeviceAllow=char-input rw",
        "MemoryMax=",
        "SupplementaryGroups=dialout input",
    ]:
        assert line in text, f"unit lost {line!r}"
