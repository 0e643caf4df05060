"""Configuration: the documented example is accepted; bad files fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import LlrpReader, ReplayReader, load_config, parse_config
from gateway.errors import ConfigError

ISSUE_EXAMPLE = """
[gateway]
id = "dock-3"
site = "milan-returns"
state_dir = "/var/lib/dock-gateway"
[mqtt]
host = "127.0.0.1"
port = 1883
topic_prefix = "returns"
delivery = "broker"          # or "wms": a row leaves the outbox only when the WMS acks its id
[[stations]]
id = "door-3"
kind = "receiving"           # receiving | inspection | restock | disposal
[[readers]]
kind = "replay"
id = "replay-1"
station = "door-3"
file = "events.jsonl"
rate_per_s = 1000
[[readers]]
kind = "llrp"
id = "door-3-portal"
host = "127.0.0.1"
port = 5084
station = "door-3"
profile = "generic-llrp-portal"
zones = { outside = [1, 2], inside = [3, 4] }
[[readers]]
kind = "tcp-scanner"
id = "door-3-handheld"
listen = "127.0.0.1:51000"
station = "door-3"
[[readers]]
kind = "serial-scanner"
id = "bench-1"
url = "/dev/ttyACM0"
baud = 9600
station = "door-3"
"""


def test_issue_example_is_accepted_and_paths_resolve(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(ISSUE_EXAMPLE, encoding="utf-8")
    config = load_config(path)
    assert config.gateway.id == "dock-3"
    assert config.mqtt.delivery == "broker"
    replay = config.readers[0]
    assert isinstance(replay, ReplayReader)
    assert replay.file == tmp_path / "events.jsonl"
    llrp = config.readers[1]
    assert isinstance(llrp, LlrpReader)
    assert llrp.zones == {"outside": [1, 2], "inside": [3, 4]}
    assert config.gateway.state_dir == Path("/var/lib/dock-gateway")


def _base() -> dict[str, object]:
    return {
        "gateway": {"id": "dock-3", "site": "milan-returns"},
        "stations": [{"id": "door-3", "kind": "receiving"}],
        "readers": [{"kind": "replay", "id": "r", "station": "door-3", "file": "x.jsonl"}],
    }


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (lambda c: c["gateway"].update(colour="red"), "gateway.colour", "unknown key"),
        (lambda c: c["gateway"].pop("site"), "gateway.site", "missing"),
        (lambda c: c.update(mqtt={"port": 70000}), "mqtt.port", "less than or equal"),
        (lambda c: c.update(mqtt={"delivery": "maybe"}), "mqtt.delivery", "broker"),
        (lambda c: c["stations"][0].update(kind="returning"), "stations.0.kind", "receiving"),
        (lambda c: c["readers"][0].update(station="nowhere"), "readers.0.station", "no station"),
        (lambda c: c["readers"][0].update(kind="telepathy"), "readers.0", "kind"),
        (lambda c: c["readers"][0].update(rate_per_s=0), "readers.0.rate_per_s", "greater than"),
        (lambda c: c.update(buffer={"max_bytes": 10}), "buffer.max_bytes", "greater"),
        (lambda c: c.update(mqtt={"receive_maximum": 0}), "mqtt.receive_maximum", "greater"),
        (lambda c: c.update(mqtt={"receive_maximum": 65536}), "mqtt.receive_maximum", "less"),
        (
            lambda c: c["readers"].append(
                {"kind": "mqtt-scanner", "id": "m", "device_stations": {"hh-1": "nowhere"}}
            ),
            "readers.1.device_stations.hh-1",
            "no station",
        ),
        (
            lambda c: c["readers"].extend(
                [{"kind": "mqtt-scanner", "id": "m"}, {"kind": "mqtt-scanner", "id": "n"}]
            ),
            "readers.2.kind",
            "one mqtt-scanner",
        ),
    ],
)
def test_bad_config_names_the_key(change: object, key: str, reason: str) -> None:
    raw = _base()
    change(raw)  # type: ignore[operator]
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.key == key
    assert reason in info.value.reason


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_an_mqtt_scanner_needs_no_station_and_receive_maximum_reaches_the_link() -> None:
    raw = _base()
    raw["readers"] = [{"kind": "mqtt-scanner", "id": "m"}]
    raw["mqtt"] = {"receive_maximum": 7}
    config = parse_config(raw)
    assert config.readers[0].station is None
    assert config.mqtt.forwarder_settings("c").link.receive_maximum == 7
    assert parse_config(_base()).mqtt.forwarder_settings("c").link.receive_maximum == 32


def test_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _base()
    raw["mqtt"] = {"username": "gw", "password_env": "DOCK_TEST_SECRET"}
    config = parse_config(raw)
    monkeypatch.setenv("DOCK_TEST_SECRET", "s3cret")
    assert config.mqtt.password() == "s3cret"
    assert "s3cret" not in repr(config)
