"""The package's private mosquitto (demo and tests share it): config, restart on the same port."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.runtime.loopback import free_port, port_answers, wait_for_port
from gateway.runtime.mosquitto import Mosquitto


def test_private_mosquitto_stops_and_starts_again_on_its_port(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    conf = broker.conf.read_text(encoding="utf-8")
    assert f"listener {broker.port} 127.0.0.1" in conf
    assert "max_queued_messages 0" in conf, "a drained backlog must never be cut by the broker"
    # mosquitto run as root drops to its own user unless kept root; either way it writes here.
    assert stat.S_IMODE(broker.workdir.stat().st_mode) == 0o777
    seen: list[tuple[bool, bool]] = []
    with broker:
        seen.append((broker.running, port_answers(broker.host, broker.port)))
        broker.stop()
        seen.append((broker.running, port_answers(broker.host, broker.port)))
        broker.start()
        seen.append((broker.running, port_answers(broker.host, broker.port)))
    seen.append((broker.running, port_answers(broker.host, broker.port)))
    assert seen == [(True, True), (False, False), (True, True), (False, False)]


def test_a_missing_binary_fails_at_start_not_later(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "m", binary=str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError):
        broker.start()
    assert not broker.running


def test_wait_for_port_gives_up_on_a_silent_port() -> None:
    with pytest.raises(TimeoutError):
        wait_for_port(free_port(), timeout_s=0.3)
