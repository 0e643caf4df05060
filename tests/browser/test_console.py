"""The technicians' console in a real browser against the real daemon and the LLRP simulator.

The daemon runs as a subprocess (`gateway run`), the simulator in a thread (so the test can read
what the reader was sent and make it refuse a ROSpec), mosquitto is real. Chromium is Debian's.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_console_security import _self_signed
from tests.integration.test_operations_e2e import _config, _scenario, _settings
from tests.support.broker import Mosquitto
from tests.support.daemon import ROOT, DaemonProcess, http_get, wait_until
from tests.support.llrp_sim import SimulatorThread
from tests.support.wms import publish

pytestmark = pytest.mark.slow

BASE = "returns/milan-returns/dock-3"
READER = "door-3-portal"
PASSWORD_ENV = "DOCK_GATEWAY_TEST_CONSOLE_PASSWORD"
PASSWORD = "correct horse battery staple"


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _history(config: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "profiles", "history", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _remote(config: Path, port: int, *, password_env: bool = True) -> None:
    """Switch the config's health listen to every address (not loopback), with a password."""
    text = config.read_text(encoding="utf-8")
    text = re.sub(r'listen = "127\.0\.0\.1:\d+"', f'listen = "0.0.0.0:{port}"', text, count=1)
    if password_env:
        text += f'[console]\npassword_env = "{PASSWORD_ENV}"\n'
    config.write_text(text, encoding="utf-8")


def test_page_shows_reader_and_tags_applies_profiles_and_says_rollback(
    tmp_path: Path, broker: Mosquitto, browser: Any
) -> None:
    port = _free_port()
    simulator = SimulatorThread(_scenario(), speed=1.0)
    with simulator as sim:
        config = _config(tmp_path, broker, sim_port=sim.port, health_port=port)
        with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
            daemon.wait_for_log("health_listening")
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{port}/")
            # Readers: the simulator reader inventorying; live tags within seconds.
            state = page.locator(f"#readers-table tr[data-reader='{READER}'] td.state")
            state.filter(has_text="inventorying").wait_for(timeout=20_000)
            page.locator("#tags-table tbody tr").first.wait_for(timeout=10_000)
            rows = page.locator("#tags-table tbody tr")
            assert rows.count() == 5
            assert "urn:epc:id:sgtin:0614141.812345." in rows.first.inner_text()
            # Updates flow: more than one coalesced message, reads per antenna shown.
            wait_until(
                lambda: page.evaluate("window.consoleStats.tagMessages") >= 3, 10, "tag updates"
            )
            # The readers table refreshes on its own cadence: the rates may show "-" at first.
            rates = page.locator(f"tr[data-reader='{READER}'] td.rates")
            wait_until(lambda: re.search(r"\d: \d", rates.inner_text()), 10, "reads per antenna")
            # Find a tag: by GTIN (all five share it), then by an EPC hex prefix that fits none.
            page.fill("#tag-filter", "80614141123458")
            wait_until(lambda: page.locator("#tags-table tbody tr").count() == 5, 10, "GTIN filter")
            page.fill("#tag-filter", "E2801160")
            wait_until(lambda: page.locator("#tags-table tbody tr").count() == 0, 10, "no match")
            page.fill("#tag-filter", "")

            # Expected returns: announce one of the tags in view, then look it up in the page.
            announce = {
                "action": "add",
                "rmas": [
                    {
                        "rma": "RMA-T1",
                        "customer": "ACME",
                        "items": [{"epc": "urn:epc:id:sgtin:0614141.812345.100"}],
                    }
                ],
            }
            publish(broker.port, f"{BASE}/cmd/expected-returns", json.dumps(announce).encode())

            def announced() -> bool:
                page.fill("#expected-query", "3034257BF7194E4000000064")
                page.click("#expected-form button")
                page.wait_for_timeout(300)
                return "announced in RMA-T1 (ACME)" in page.inner_text("#expected-result")

            wait_until(announced, 20, "the announcement in the lookup")
            found = page.inner_text("#expected-result")
            assert "not arrived yet" in found
            assert f"in view now: reader {READER}" in found
            page.fill("#expected-query", "RMA-T1")
            page.click("#expected-form button")
            page.locator("#expected-result", has_text="0 of 1 arrived").wait_for(timeout=5_000)

            # On loopback no login, but still no change without the page's CSRF token, none from
            # another origin, and no form-encoded (cross-site postable) action.
            base = f"http://127.0.0.1:{port}"
            body = {"reader": READER, "name": "test-low"}
            assert page.request.post(f"{base}/console/api/profiles/apply", data=body).status == 403
            csrf = page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
            other = page.request.post(
                f"{base}/console/api/profiles/check",
                data=body,
                headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
            )
            assert other.status == 403
            form = urllib.request.Request(
                f"{base}/actions/profile-apply",
                data=json.dumps(body).encode(),
                method="POST",
                headers={"Content-Type": "text/plain"},
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(form, timeout=5)
            assert refused.value.code == 415

            # A profile applied from the page reaches the simulator and is in the history.
            original = _settings(sim.record.last_rospec)
            page.select_option("#profile-reader", READER)
            page.select_option("#profile-name", "test-low")
            page.click("#profile-diff")
            page.locator("#profile-result", has_text="reader.session: 2 → 1").wait_for(
                timeout=10_000
            )
            page.fill("#requested-by", "fatima")
            page.click("#profile-apply")
            result = page.locator("#profile-result.ok", has_text="applied: test-low")
            result.wait_for(timeout=60_000)
            low = _settings(sim.record.last_rospec)
            assert low != original
            assert {a.session for a in low.antenna_settings} == {1}
            page.locator("#history-table tbody tr", has_text="fatima").wait_for(timeout=10_000)
            page.locator(f"tr[data-reader='{READER}']", has_text="test-low v1").wait_for(
                timeout=10_000
            )

            # A profile the reader refuses: rolled back, and the page says so.
            sim.reject_next("ADD_ROSPEC")
            page.select_option("#profile-name", "test-portal")
            page.click("#profile-apply")
            refused = page.locator("#profile-result.bad", has_text="rejected")
            refused.wait_for(timeout=60_000)
            assert "rolled back to test-low v1" in refused.inner_text()
            wait_until(lambda: _settings(sim.record.last_rospec) == low, 30, "old ROSpec again")
            page.locator("#history-table tbody tr", has_text="rejected").wait_for(timeout=10_000)
            page.close()
            assert errors == []
            assert daemon.alive()
    history = _history(config)
    assert [(h["requested_by"], h["source"], h["outcome"], h["client"]) for h in history] == [
        ("fatima", "console", "applied", "127.0.0.1"),
        ("fatima", "console", "rejected", "127.0.0.1"),
    ]
    assert history[1]["rollback"] == "applied"


def test_login_required_off_loopback_csrf_and_throttle(
    tmp_path: Path, broker: Mosquitto, browser: Any
) -> None:
    port = _free_port("0.0.0.0")  # the point of the test: a listen that is not loopback
    config = _config(tmp_path, broker, sim_port=None, health_port=port)
    _remote(config, port, password_env=False)
    # No password configured: the daemon refuses to start and names the key.
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "console.password_env" in out.stderr
    _remote(config, port)
    # Named but not set in the environment: refused too.
    env_without = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
        env=env_without,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "console.password_env" in out.stderr

    with DaemonProcess(config, tmp_path / "daemon.log", env={PASSWORD_ENV: PASSWORD}) as daemon:
        daemon.wait_for_log("health_listening")
        base = f"http://127.0.0.1:{port}"
        # Health and metrics stay open; the page and the actions do not.
        assert http_get(f"{base}/healthz")[0] == 200
        assert http_get(f"{base}/metrics")[0] == 200
        assert http_get(f"{base}/console/api/state")[0] == 401
        action = urllib.request.Request(
            f"{base}/actions/profile-apply",
            data=b'{"reader": "x", "name": "test-low"}',
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(action, timeout=5)
        assert refused.value.code == 401

        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{base}/")
        assert page.url.endswith("/login")
        page.fill("#login-user", "gianni")
        page.fill("#login-password", "wrong")
        page.click("#login-submit")
        page.locator("#login-message", has_text="Wrong user or password").wait_for()
        page.fill("#login-password", PASSWORD)
        page.click("#login-submit")
        page.locator("#user", has_text="gianni").wait_for(timeout=10_000)
        cookie = next(c for c in context.cookies() if c["name"] == "dock_console")
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"

        # Signed in: a change without the CSRF token is refused, with it accepted.
        body = {"reader": READER, "name": "test-low"}
        no_token = page.request.post(f"{base}/console/api/profiles/check", data=body)
        assert no_token.status == 403
        assert "CSRF" in no_token.json()["error"]
        no_token = page.request.post(f"{base}/console/api/profiles/apply", data=body)
        assert no_token.status == 403
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        with_token = page.request.post(
            f"{base}/console/api/profiles/check", data=body, headers={"X-CSRF-Token": csrf}
        )
        assert with_token.status == 200
        assert with_token.json()["ok"] is True
        # Signing out ends the session: the API asks for a login again.
        page.click("#logout-form button")
        page.wait_for_url("**/login")
        assert page.request.get(f"{base}/console/api/state").status == 401
        context.close()

        # The CLI signs in by itself on a non-loopback endpoint and reaches the action (which
        # refuses: this daemon has no LLRP reader); with a wrong password it does not get there.
        cli = [sys.executable, "-m", "gateway", "profiles", "apply", "--config", str(config)]
        cli += ["--reader", READER, "--by", "hana", "test-low"]
        for password, expected in (
            (PASSWORD, "no LLRP reader"),
            ("nope", "wrong user or password"),
        ):
            out = subprocess.run(
                cli,
                capture_output=True,
                text=True,
                check=False,
                cwd=ROOT,
                timeout=60,
                env={**os.environ, PASSWORD_ENV: password},
            )
            assert out.returncode == 1, out.stdout + out.stderr
            assert expected in out.stdout + out.stderr, out.stdout + out.stderr

        # Failed logins are rate-limited and counted.
        statuses = []
        for _ in range(7):
            login = urllib.request.Request(
                f"{base}/login",
                data=json.dumps({"user": "mallory", "password": "guess"}).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            try:
                urllib.request.urlopen(login, timeout=5)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
        # The browser's signing in cleared its one failure; the CLI's wrong password was one.
        assert statuses == [401] * 4 + [429, 429, 429]
        metrics = http_get(f"{base}/metrics")[1]
        assert "gateway_console_logins_failed_total 6.0" in metrics
        assert "gateway_console_logins_throttled_total 3.0" in metrics
        assert "gateway_console_csrf_refused_total 2.0" in metrics
        assert daemon.alive()


def test_tuning_page_draws_rate_and_rssi_per_antenna_and_applies_a_suggestion_on_a_click(
    tmp_path: Path, broker: Mosquitto, browser: Any
) -> None:
    port = _free_port()
    simulator = SimulatorThread(_scenario(), speed=1.0)  # five tags parked before all 4 antennas
    with simulator as sim:
        config = _config(tmp_path, broker, sim_port=sim.port, health_port=port)
        _parked_after(config, 5)
        with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
            daemon.wait_for_log("health_listening")
            page, errors = _watched_page(browser)
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator(f"#readers-table tr[data-reader='{READER}'] a").click()
            page.wait_for_url(f"**/console/tuning/{READER}")
            # Both charts, drawn by the page itself: one series per antenna, points from data.
            for chart in ("#reads-chart", "#rssi-chart"):
                series = page.locator(f"{chart} g[data-antenna]")
                wait_until(lambda s=series: s.count() == 4, 30, f"{chart}: four antennas")
                assert page.locator(f"{chart} g[data-antenna='1'] circle").count() >= 1
            assert "antenna 4" in page.inner_text("#chart-legend")
            # Two 10-second buckets make a line.
            line = page.locator("#reads-chart g[data-antenna='1'] polyline")
            wait_until(lambda: len((line.get_attribute("points") or "").split()) >= 2, 40, "a line")
            # Read rates are drawn where the data puts them: above the zero line.
            circles = page.locator("#reads-chart g[data-antenna='1'] circle")
            assert all(float(c.get_attribute("cy") or 0) < 196 for c in circles.all())
            # The five tags in view for 5 s without crossing are parked, on all four antennas.
            wait_until(lambda: page.locator("#parked-table tbody tr").count() == 5, 20, "parked")
            assert page.inner_text("#crossing-count") == "0"
            row = page.locator("#parked-table tbody tr").first.inner_text()
            assert "urn:epc:id:sgtin:0614141.812345." in row
            assert "1: -" in row  # antenna 1 with its peak dBm
            # A suggestion with its evidence; nothing applied until the click.
            before = _settings(sim.record.last_rospec)
            suggestion = page.locator(".suggestion[data-suggestion='parked-1']")
            suggestion.wait_for(timeout=20_000)
            text = suggestion.inner_text()
            assert "antenna 1 reads 5 parked tags at" in text
            assert "lower its power by 3 dB" in text
            assert "5 tags in view of antenna 1 for minutes without crossing" in text
            page.wait_for_timeout(1000)
            assert _settings(sim.record.last_rospec) == before
            suggestion.locator("button.review").first.click()
            page.locator("#suggestion-result", has_text="antennas.0.power_dbm: 27 → 24").wait_for(
                timeout=10_000
            )
            suggestion.locator("button.apply").first.click()
            page.locator("#suggestion-result.ok", has_text="applied: test-portal v2").wait_for(
                timeout=60_000
            )
            after = _settings(sim.record.last_rospec)
            power = {a.antenna: a.power_index for a in after.antenna_settings}
            old = {a.antenna: a.power_index for a in before.antenna_settings}
            assert power[1] != old[1]
            assert {p: power[p] for p in (2, 3, 4)} == {p: old[p] for p in (2, 3, 4)}
            page.close()
            assert errors == []
            assert daemon.alive()
    (applied,) = _history(config)
    assert (applied["requested_by"], applied["outcome"]) == ("tuning page", "applied")


def test_daemon_serves_the_console_over_https_with_a_secure_cookie(
    tmp_path: Path, broker: Mosquitto, browser: Any
) -> None:
    port = _free_port("0.0.0.0")
    config = _config(tmp_path, broker, sim_port=None, health_port=port)
    _remote(config, port)
    cert, key = _self_signed(tmp_path)
    with config.open("a", encoding="utf-8") as extra:  # the [console] table _remote wrote last
        extra.write(f"tls_cert = {json.dumps(str(cert))}\ntls_key = {json.dumps(str(key))}\n")
    with DaemonProcess(config, tmp_path / "daemon.log", env={PASSWORD_ENV: PASSWORD}) as daemon:
        daemon.wait_for_log("health_listening")
        # No clear text: a plain HTTP request gets no HTTP answer.
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        # The CLI finds the daemon over https, trusting the configured certificate.
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "status", "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "daemon: running" in out.stdout, out.stdout
        # A browser (told to accept the test's self-signed certificate) signs in over https.
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.goto(f"https://127.0.0.1:{port}/")
        assert page.url.endswith("/login")
        page.fill("#login-user", "gianni")
        page.fill("#login-password", PASSWORD)
        page.click("#login-submit")
        page.locator("#user", has_text="gianni").wait_for(timeout=10_000)
        cookie = next(c for c in context.cookies() if c["name"] == "dock_console")
        assert cookie["secure"] is True
        assert cookie["httpOnly"] is True
        context.close()
        assert daemon.alive()


def test_ab_trial_alternates_two_profiles_measures_each_and_restores_the_first(
    tmp_path: Path, broker: Mosquitto, browser: Any
) -> None:
    port = _free_port()
    simulator = SimulatorThread(_scenario(), speed=1.0)
    with simulator as sim:
        config = _config(tmp_path, broker, sim_port=sim.port, health_port=port)
        _parked_after(config, 2)
        with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
            daemon.wait_for_log("health_listening")
            page, errors = _watched_page(browser)
            page.goto(f"http://127.0.0.1:{port}/console/tuning/{READER}")
            page.locator("#reads-chart g[data-antenna='1']").wait_for(timeout=30_000)
            original = _settings(sim.record.last_rospec)
            page.locator("#trial-a option[value='test-low']").wait_for(state="attached")
            page.select_option("#trial-a", "test-low")
            page.select_option("#trial-b", "test-portal")
            page.fill("#trial-phase", "4")
            page.fill("#trial-rounds", "1")
            page.click("#trial-start")
            page.locator("#trial-state", has_text="running").wait_for(timeout=10_000)
            # A second trial while one runs is refused.
            csrf = page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
            again = page.request.post(
                f"http://127.0.0.1:{port}/console/api/trial/start",
                data={
                    "reader": READER,
                    "a": "test-low",
                    "b": "test-portal",
                    "phase_s": 4,
                    "rounds": 1,
                },
                headers={"X-CSRF-Token": csrf},
            )
            assert again.status == 409
            # While A runs, the reader has A's settings.
            wait_until(
                lambda: (
                    {a.session for a in _settings(sim.record.last_rospec).antenna_settings} == {1}
                ),
                30,
                "profile A on the reader",
            )
            page.locator("#trial-state", has_text="done").wait_for(timeout=90_000)
            rows = page.locator("#trial-table tbody tr")
            assert rows.count() == 2
            assert rows.nth(0).inner_text().startswith("A\ttest-low v1")
            assert rows.nth(1).inner_text().startswith("B\ttest-portal v1")
            assert re.search(r"1: -\d", rows.nth(0).inner_text())  # mean RSSI on antenna 1
            assert page.inner_text("#trial-verdict")
            assert "crossings per minute: A" in page.inner_text("#trial-evidence")
            assert "restored test-portal v1" in page.inner_text("#trial-phase-now")
            page.locator("#trial-keep button.keep-A").wait_for(timeout=5_000)
            # The reader is back on the profile it had before the trial.
            wait_until(lambda: _settings(sim.record.last_rospec) == original, 30, "restored")
            # Stopped half-way, a trial restores the first profile too.
            page.fill("#trial-phase", "600")
            page.click("#trial-start")
            page.locator("#trial-phase-now", has_text="now: A").wait_for(timeout=30_000)
            page.click("#trial-stop")
            page.locator("#trial-state", has_text="stopped").wait_for(timeout=60_000)
            assert page.locator("#trial-table tbody tr").count() == 1
            wait_until(lambda: _settings(sim.record.last_rospec) == original, 30, "restored")
            # A profile the reader refuses ends the trial: failed, said why, nothing measured.
            sim.reject_next("ADD_ROSPEC")
            page.click("#trial-start")
            page.locator("#trial-state", has_text="failed").wait_for(timeout=60_000)
            assert "test-low v1: rejected" in page.inner_text("#trial-phase-now")
            assert page.locator("#trial-table tbody tr").count() == 0
            wait_until(lambda: _settings(sim.record.last_rospec) == original, 30, "rolled back")
            page.close()
            assert errors == []
            assert daemon.alive()
    history = _history(config)
    assert [(h["new"]["name"], h["source"], h["outcome"]) for h in history] == [
        ("test-low", "console-trial", "applied"),
        ("test-portal", "console-trial", "applied"),  # B was in force before: no restore needed
        ("test-low", "console-trial", "applied"),
        ("test-portal", "console-trial", "applied"),  # stopped during A: restored
        ("test-low", "console-trial", "rejected"),  # the apply's own rollback: no restore
    ]
    assert {h["client"] for h in history} == {"127.0.0.1"}


def _parked_after(config: Path, seconds: float) -> None:
    """Call a tag parked after `seconds` in view (the default two minutes is a long test)."""
    with config.open("a", encoding="utf-8") as extra:
        extra.write(f"[console]\nparked_after_s = {seconds}\n")


def _watched_page(browser: Any) -> tuple[Any, list[str]]:
    """A new page and the errors it reports: scripts' and the console's (a CSP refusal of an
    inline script or style shows only as a console error)."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return page, errors
