"""The broker link's security end to end: TLS, client certificates, passwords, an ACL.

Each test starts its own mosquitto with a TLS-only listener, a password file and an ACL (see
tests/support/secure_broker.py), runs the daemon as a real subprocess at DEBUG level with its
password in an environment variable, and checks what reaches a TLS subscriber, what the daemon
logged and what its SQLite outbox still holds.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import free_port
from tests.support.daemon import ROOT, DaemonProcess, buffer_stats, wait_until, write_config
from tests.support.scans import scan_events, write_jsonl
from tests.support.secure_broker import (
    ADMIN_USER,
    GATEWAY_USER,
    SITE_BASE,
    Pki,
    SecureMosquitto,
    TlsCollector,
    gateway_acl,
    make_pki,
)

pytestmark = pytest.mark.slow

BASE = f"{SITE_BASE}/dock-3"
STATION = {"id": "door-3", "kind": "receiving"}
PASSWORD_ENV = "DOCK_GATEWAY_TEST_MQTT_PASSWORD"
# Distinctive enough that finding it in a log cannot be a coincidence.
PASSWORD = "gw-secret-" + secrets.token_hex(12)
ADMIN_PASSWORD = "wms-secret-" + secrets.token_hex(12)
EVENTS = 40


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One set of certificates for the whole file (generating them takes a fraction of a second)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def secure_broker(tmp_path: Path, pki: Pki) -> Iterator[SecureMosquitto]:
    """TLS-only mosquitto with `gw` (the gateway) and `wms` (reads everything) and the ACL."""
    with _broker(tmp_path, pki) as running:
        yield running


def _broker(
    tmp_path: Path, pki: Pki, *, acl: str | None = None, require_certificate: bool = False
) -> SecureMosquitto:
    return SecureMosquitto(
        tmp_path / "mosquitto",
        pki,
        {GATEWAY_USER: PASSWORD, ADMIN_USER: ADMIN_PASSWORD},
        acl=acl,
        require_certificate=require_certificate,
    )


def _collector(broker: SecureMosquitto, topics: list[str]) -> TlsCollector:
    return TlsCollector(
        broker.port, topics, pki=broker.pki, username=ADMIN_USER, password=ADMIN_PASSWORD
    )


def _config(
    tmp_path: Path,
    broker: SecureMosquitto,
    *,
    tls: dict[str, Any],
    gateway_id: str = "dock-3",
    mqtt: dict[str, Any] | None = None,
    health_port: int | None = None,
) -> Path:
    """A config whose replay reader makes EVENTS receipts; same state dir on every rewrite."""
    replay = tmp_path / "events.jsonl"
    if not replay.exists():
        write_jsonl(replay, scan_events(EVENTS))
    path = write_config(
        tmp_path / "gateway.toml",
        broker_port=broker.port,
        state_dir=tmp_path / "state",
        stations=[STATION],
        readers=[
            {
                "kind": "replay",
                "id": "replay-1",
                "station": "door-3",
                "file": str(replay),
                "rate_per_s": 1000,
            }
        ],
        mqtt={
            "username": GATEWAY_USER,
            "password_env": PASSWORD_ENV,
            "tls": tls,
            **(mqtt or {}),
        },
        gateway_id=gateway_id,
    )
    if health_port is not None:
        text = path.read_text(encoding="utf-8").replace(
            "[health]\nenabled = false",
            f'[health]\nenabled = true\nlisten = "127.0.0.1:{health_port}"',
        )
        path.write_text(text, encoding="utf-8")
    return path


def _daemon(tmp_path: Path, config: Path, password: str = PASSWORD) -> DaemonProcess:
    return DaemonProcess(config, tmp_path / "daemon.log", env={PASSWORD_ENV: password})


def _events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == name]


def _pending(config: Path) -> int:
    pending: int = buffer_stats(config)["pending"]
    return pending


def _made_all(config: Path) -> bool:
    try:
        stats = buffer_stats(config)
    except subprocess.CalledProcessError:
        return False  # the daemon has not created its buffer file yet
    return int(stats["last_seq"]) >= EVENTS


def _assert_secret_absent(log: Path, *secrets_: str) -> None:
    text = log.read_text(encoding="utf-8", errors="replace")
    assert text, "the daemon wrote no log at all; the check would prove nothing"
    for secret in secrets_:
        assert secret not in text, "a broker password appears in the daemon's log"


def _at_s(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def _failures_during(daemon: DaemonProcess, window_s: float) -> list[dict[str, Any]]:
    """The connect failures the daemon logs during the next `window_s` seconds (at DEBUG too)."""
    before = len(_events(daemon, "broker_connect_failed"))
    time.sleep(window_s)
    return _events(daemon, "broker_connect_failed")[before:]


# -- 1. right CA, right user, password from the environment ------------------------------------


def test_movements_arrive_over_tls_with_password_from_environment(
    tmp_path: Path, secure_broker: SecureMosquitto
) -> None:
    config = _config(tmp_path, secure_broker, tls={"ca_file": str(secure_broker.pki.ca_cert)})
    with (
        _collector(secure_broker, [f"{BASE}/movements"]) as collector,
        _daemon(tmp_path, config) as daemon,
    ):
        collector.wait_for(lambda c: len(c.distinct_ids()) >= EVENTS, 30, "every movement")
        wait_until(lambda: _pending(config) == 0, 20, "outbox drained by PUBACKs")
        assert len(collector.distinct_ids()) == EVENTS
        assert all(m.json()["gateway"] == "dock-3" for m in collector.received())
        assert _events(daemon, "broker_connected"), "the daemon never logged broker_connected"
        assert daemon.terminate() == 0
    # The broker saw the gateway log in as `gw` over its TLS-only listener.
    assert f"u'{GATEWAY_USER}'" in secure_broker.log_text()
    _assert_secret_absent(daemon.log, PASSWORD)


# -- 2. a listener that requires a client certificate -------------------------------------------


def test_client_certificate_required_by_the_listener(tmp_path: Path, pki: Pki) -> None:
    with (
        _broker(tmp_path, pki, require_certificate=True) as broker,
        _collector(broker, [f"{BASE}/movements"]) as collector,
    ):
        without_cert = _config(tmp_path, broker, tls={"ca_file": str(pki.ca_cert)})
        with _daemon(tmp_path, without_cert) as daemon:
            wait_until(lambda: _made_all(without_cert), 30, "movements made offline")
            daemon.wait_for_log("broker_connect_failed", timeout_s=20, count=2)
            assert daemon.alive()
            assert not _events(daemon, "broker_connected"), "connected without a certificate"
            assert daemon.terminate() == 0
        assert _pending(without_cert) == EVENTS
        assert collector.received() == []

        with_cert = _config(
            tmp_path,
            broker,
            tls={
                "ca_file": str(pki.ca_cert),
                "cert_file": str(pki.client_cert),
                "key_file": str(pki.client_key),
            },
        )
        with _daemon(tmp_path, with_cert) as daemon:
            collector.wait_for(lambda c: len(c.distinct_ids()) >= EVENTS, 30, "every movement")
            assert len(collector.distinct_ids()) == EVENTS
            assert daemon.terminate() == 0
    _assert_secret_absent(daemon.log, PASSWORD)


def test_missing_client_certificate_is_named_in_the_log(tmp_path: Path, pki: Pki) -> None:
    with _broker(tmp_path, pki, require_certificate=True) as broker:
        config = _config(tmp_path, broker, tls={"ca_file": str(pki.ca_cert)})
        with _daemon(tmp_path, config) as daemon:
            first = daemon.wait_for_log("broker_connect_failed", timeout_s=20)[0]
            assert daemon.terminate() == 0
    assert re.search(r"(?i)certificate", str(first["reason"])), first


# -- 3. the wrong CA ----------------------------------------------------------------------------


def test_wrong_ca_fails_clearly_backs_off_and_loses_nothing(
    tmp_path: Path, secure_broker: SecureMosquitto
) -> None:
    pki = secure_broker.pki
    mqtt = {"reconnect_min_s": 0.2, "reconnect_max_s": 2.0}
    wrong = _config(tmp_path, secure_broker, tls={"ca_file": str(pki.other_ca_cert)}, mqtt=mqtt)
    with _collector(secure_broker, [f"{BASE}/movements"]) as collector:
        with _daemon(tmp_path, wrong) as daemon:
            first = daemon.wait_for_log("broker_connect_failed", timeout_s=20)[0]
            assert first["level"] == "warning"
            assert re.search(r"(?i)certificate|TLS verification", str(first["reason"])), first
            window_s = 6.0
            repeats = _failures_during(daemon, window_s)
            assert daemon.alive()
            # It keeps trying, and at the pace of a capped backoff, not a storm.
            assert len(repeats) >= 2, f"{len(repeats)} retries in {window_s} s"
            assert len(repeats) <= window_s / mqtt["reconnect_min_s"] / 2, len(repeats)
            assert all(e["level"] == "debug" for e in repeats), "repeats must be DEBUG"
            assert not _events(daemon, "broker_connected")
            wait_until(lambda: _made_all(wrong), 20, "every movement made")
            assert _pending(wrong) == EVENTS
            assert daemon.terminate() == 0
        assert collector.received() == []
        # The operator fixes the CA: everything buffered arrives.
        right = _config(tmp_path, secure_broker, tls={"ca_file": str(pki.ca_cert)}, mqtt=mqtt)
        with _daemon(tmp_path, right) as daemon:
            collector.wait_for(lambda c: len(c.distinct_ids()) >= EVENTS, 30, "every movement")
            wait_until(lambda: _pending(right) == 0, 20, "outbox drained")
            assert daemon.terminate() == 0
    assert len(collector.distinct_ids()) == EVENTS
    _assert_secret_absent(daemon.log, PASSWORD)


# -- 4. the wrong password ----------------------------------------------------------------------


def test_wrong_password_is_refused_at_the_longest_backoff(
    tmp_path: Path, secure_broker: SecureMosquitto
) -> None:
    wrong_password = "gw-wrong-" + secrets.token_hex(12)
    max_s = 2.0
    mqtt = {"reconnect_min_s": 0.2, "reconnect_max_s": max_s}
    config = _config(
        tmp_path, secure_broker, tls={"ca_file": str(secure_broker.pki.ca_cert)}, mqtt=mqtt
    )
    with _collector(secure_broker, [f"{BASE}/movements"]) as collector:
        with _daemon(tmp_path, config, password=wrong_password) as daemon:
            first = daemon.wait_for_log("broker_connect_failed", timeout_s=20)[0]
            reason = str(first["reason"])
            assert re.search(r"(?i)not authori[sz]ed|bad user name or password", reason), first
            assert first["refused"] is True
            window_s = 5.0
            repeats = _failures_during(daemon, window_s)
            assert daemon.alive(), "a refused login must not end the process"
            # Each wait is the longest backoff less up to half of it (jitter): at least max_s / 2.
            assert 1 <= len(repeats) <= window_s / (max_s / 2) + 1, len(repeats)
            attempts = _events(daemon, "broker_connect_failed")
            gaps_s = [_at_s(b) - _at_s(a) for a, b in itertools.pairwise(attempts)]
            assert gaps_s
            # The longest backoff, give or take its jitter; the ordinary cycle starts at 0.2 s.
            assert min(gaps_s) >= 0.45 * max_s, f"refusals retried below the cap: {gaps_s}"
            wait_until(lambda: _made_all(config), 20, "every movement made")
            assert _pending(config) == EVENTS
            assert daemon.terminate() == 0
        assert collector.received() == []
        # The right password: what was kept is all there.
        with _daemon(tmp_path, config) as daemon:
            collector.wait_for(lambda c: len(c.distinct_ids()) >= EVENTS, 30, "every movement")
            assert daemon.terminate() == 0
    assert len(collector.distinct_ids()) == EVENTS
    _assert_secret_absent(daemon.log, PASSWORD, wrong_password)


# -- 5. a topic outside the ACL -----------------------------------------------------------------


def _acl_without_movements() -> str:
    """`gw` may write its status, events, KPIs and command results, but not its movements."""
    lines = [f"user {GATEWAY_USER}"]
    lines += [f"topic write {BASE}/{leaf}" for leaf in ("status", "events", "kpi", "cmd-result/#")]
    lines += [f"topic read {BASE}/{leaf}" for leaf in ("ack", "cmd/#", "scans/#")]
    lines += ["", f"user {ADMIN_USER}", "topic readwrite #", ""]
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("gateway_id", "acl"),
    [
        pytest.param("dock-9", gateway_acl(), id="gateway-outside-acl"),
        pytest.param("dock-3", _acl_without_movements(), id="movements-topic-outside-acl"),
    ],
)
def test_publish_outside_the_acl_is_refused_kept_logged_and_counted(
    tmp_path: Path, pki: Pki, gateway_id: str, acl: str
) -> None:
    health_port = free_port()
    with (
        _broker(tmp_path, pki, acl=acl) as broker,
        _collector(broker, [f"{SITE_BASE}/+/movements"]) as collector,
    ):
        config = _config(
            tmp_path,
            broker,
            tls={"ca_file": str(pki.ca_cert)},
            gateway_id=gateway_id,
            # Window 1: with more publishes behind the refused one, mosquitto's close loses the
            # 0x87 PUBACK (the test below covers the default window).
            mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 2.0, "max_inflight": 1},
            health_port=health_port,
        )
        with _daemon(tmp_path, config) as daemon:
            refused = daemon.wait_for_log("publish_refused", timeout_s=30)
            assert any(e.get("reason_code") == "0x87" for e in refused), refused
            wait_until(
                lambda: _metric(health_port, "gateway_mqtt_refused_total") >= 1,
                10,
                "the refusal counted on /metrics",
            )
            wait_until(lambda: _made_all(config), 20, "every movement made")
            connects_before = len(_events(daemon, "broker_connected"))
            time.sleep(3.0)
            assert daemon.alive(), "a refused publish must not end the process"
            # mosquitto drops the link after a refused PUBACK: reconnects stay paced.
            assert len(_events(daemon, "broker_connected")) - connects_before <= 8
            assert _pending(config) == EVENTS, "a refused row must stay in the outbox"
            assert daemon.terminate() == 0
        assert collector.received() == []
        if gateway_id == "dock-3":
            rows = [e for e in _events(daemon, "publish_refused") if "seq" in e]
            assert rows, "the refused movement row itself must be logged with its seq"
            assert rows[0]["level"] == "error"
    _assert_secret_absent(daemon.log, PASSWORD)


def test_every_acl_refusal_is_reported_and_retried_at_the_longest_backoff(
    tmp_path: Path, pki: Pki
) -> None:
    max_s = 1.5
    with _broker(tmp_path, pki, acl=_acl_without_movements()) as broker:
        config = _config(
            tmp_path,
            broker,
            tls={"ca_file": str(pki.ca_cert)},
            mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": max_s},
        )
        with _daemon(tmp_path, config) as daemon:
            daemon.wait_for_log("broker_connected", timeout_s=30)
            time.sleep(4 * max_s)
            assert daemon.terminate() == 0
    names = {"publish_refused", "broker_link_lost"}
    events = [e for e in daemon.log_events() if e.get("event") in names]
    # Every drop after the first follows a refusal the daemon saw and logged.
    unexplained = [
        later
        for earlier, later in itertools.pairwise(events)
        if later["event"] == "broker_link_lost" and earlier["event"] != "publish_refused"
    ]
    assert len(unexplained) <= 1, f"{len(unexplained)} link drops without a logged refusal"
    refusals = [e for e in events if e["event"] == "publish_refused" and "seq" in e]
    assert len(refusals) >= 2
    gaps_s = [_at_s(b) - _at_s(a) for a, b in itertools.pairwise(refusals)]
    assert min(gaps_s) >= 0.45 * max_s, f"a refused row retried below the cap: {gaps_s}"


def _metric(port: int, name: str) -> float:
    """A metric's value from the daemon's /metrics, 0 when absent or not answering yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- 6. the secret is never logged --------------------------------------------------------------


def test_password_never_appears_in_the_log(tmp_path: Path, secure_broker: SecureMosquitto) -> None:
    wrong_password = "gw-wrong-" + secrets.token_hex(12)
    config = _config(
        tmp_path,
        secure_broker,
        tls={"ca_file": str(secure_broker.pki.ca_cert)},
        mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 0.5},
    )
    with _collector(secure_broker, [f"{BASE}/movements"]) as collector:
        # A refused login first (its repeats log at DEBUG), then a good one, in one log file.
        with _daemon(tmp_path, config, password=wrong_password) as daemon:
            daemon.wait_for_log("broker_connect_failed", timeout_s=20, count=2)
            assert daemon.terminate() == 0
        with _daemon(tmp_path, config) as daemon:
            collector.wait_for(lambda c: len(c.distinct_ids()) >= EVENTS, 30, "every movement")
            assert daemon.terminate() == 0
    events = daemon.log_events()
    assert any(e.get("level") == "debug" for e in events), "no DEBUG line: the check means less"
    assert any(e.get("event") == "broker_connected" for e in events)
    assert PASSWORD_ENV in config.read_text(encoding="utf-8")
    _assert_secret_absent(daemon.log, PASSWORD, wrong_password)
    # Nor does the config checker print it.
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
        env={**os.environ, PASSWORD_ENV: PASSWORD},
    )
    assert checked.returncode == 0, checked.stderr
    assert PASSWORD not in checked.stdout + checked.stderr


# -- 9. TLS and credentials apply to every server of `[mqtt] servers` ---------------------------


def test_tls_and_password_apply_to_every_server_of_the_list(
    tmp_path: Path, secure_broker: SecureMosquitto
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    live = f"127.0.0.1:{secure_broker.port}"
    config = _config(
        tmp_path,
        secure_broker,
        tls={"ca_file": str(secure_broker.pki.ca_cert)},
        mqtt={"servers": [dead, live]},
    )
    with (
        _collector(secure_broker, [f"{BASE}/movements"]) as collector,
        _daemon(tmp_path, config) as daemon,
    ):
        collector.wait_for(lambda c: len(c.distinct_ids()) >= EVENTS, 30, "every movement")
        wait_until(lambda: _pending(config) == 0, 20, "outbox drained by PUBACKs")
        assert daemon.terminate() == 0
    assert [e["server"] for e in _events(daemon, "broker_connect_failed")][:1] == [dead]
    assert [e["server"] for e in _events(daemon, "broker_connected")] == [live]
    assert f"u'{GATEWAY_USER}'" in secure_broker.log_text()
    _assert_secret_absent(daemon.log, PASSWORD)


# -- 10. MQTT 3.1.1: no reason code on PUBACK ----------------------------------------------------


def test_311_publish_refused_by_the_acl_is_kept_with_wms_delivery(tmp_path: Path, pki: Pki) -> None:
    """mosquitto acks a 3.1.1 publish its ACL refuses and drops it; only the WMS's ack counts."""
    with (
        _broker(tmp_path, pki, acl=_acl_without_movements()) as broker,
        _collector(broker, [f"{SITE_BASE}/+/movements"]) as collector,
    ):
        config = _config(
            tmp_path,
            broker,
            tls={"ca_file": str(pki.ca_cert)},
            mqtt={
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 2.0,
                "protocol": "3.1.1",
                "delivery": "wms",
            },
        )
        with _daemon(tmp_path, config) as daemon:
            wait_until(lambda: _made_all(config), 20, "every movement made")
            wait_until(
                lambda: len(_events(daemon, "broker_link_lost")) >= 3,
                30,
                "links dropped by the ACL",
            )
            assert daemon.alive()
            assert _pending(config) == EVENTS, "a row the broker dropped must stay in the outbox"
            assert not _events(daemon, "mqtt311_broker_delivery")
            assert daemon.terminate() == 0
        assert collector.received() == []


def test_311_with_broker_delivery_warns_that_refusals_cannot_be_seen(
    tmp_path: Path, secure_broker: SecureMosquitto
) -> None:
    config = _config(
        tmp_path,
        secure_broker,
        tls={"ca_file": str(secure_broker.pki.ca_cert)},
        mqtt={"protocol": "3.1.1"},
    )
    with _daemon(tmp_path, config) as daemon:
        [warning] = daemon.wait_for_log("mqtt311_broker_delivery", timeout_s=20)
        wait_until(lambda: _pending(config) == 0, 30, "outbox drained by 3.1.1 PUBACKs")
        assert daemon.terminate() == 0
    assert 'delivery = "wms"' in warning["advice"]
