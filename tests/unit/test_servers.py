"""`[mqtt] servers` and `protocol`: parsing, the order servers are tried in, failover counting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config, parse_server
from gateway.errors import ConfigError
from gateway.sync.servers import ServerRing, server_name


def _mqtt(**mqtt: Any) -> Any:
    return parse_config({"gateway": {"id": "dock-3", "site": "milan"}, "mqtt": mqtt}).mqtt


@pytest.mark.parametrize(
    ("entry", "want"),
    [
        ("broker-1:1883", ("broker-1", 1883)),
        ("10.0.0.7:8883", ("10.0.0.7", 8883)),
        ("[::1]:1883", ("::1", 1883)),
        (" nats-2.site:1884 ", ("nats-2.site", 1884)),
    ],
)
def test_server_entries_parse(entry: str, want: tuple[str, int]) -> None:
    assert parse_server(entry) == want


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["broker-1"], "entry 0: 'broker-1' is not host:port"),
        (["a:1883", "b:"], "entry 1: 'b:': the port must be 1 to 65535"),
        (["a:1883", ":1883"], "entry 1: ':1883' is not host:port"),
        (["a:0"], "entry 0: 'a:0': the port must be 1 to 65535"),
        (["a:65536"], "entry 0: 'a:65536': the port must be 1 to 65535"),
        (["a:http"], "entry 0: 'a:http': the port must be 1 to 65535"),
        (["a b:1883"], "entry 0: 'a b:1883' is not host:port"),
        (["a:1883", "a:1883"], "the same server is listed twice"),
    ],
)
def test_a_bad_server_entry_is_a_config_error_naming_the_key(
    entries: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _mqtt(servers=entries)
    assert caught.value.key == "mqtt.servers"
    assert message in str(caught.value)


def test_servers_default_to_host_and_port() -> None:
    assert _mqtt(host="broker", port=1884).endpoints() == (("broker", 1884),)
    section = _mqtt(host="ignored", servers=["n1:1883", "n2:1883"])
    assert section.endpoints() == (("n1", 1883), ("n2", 1883))


def test_protocol_is_5_or_311_only() -> None:
    assert _mqtt().protocol == "5"
    assert _mqtt(protocol="3.1.1").protocol == "3.1.1"
    with pytest.raises(ConfigError) as caught:
        _mqtt(protocol="3.1")
    assert caught.value.key == "mqtt.protocol"


def test_forwarder_settings_carry_every_server_and_the_shared_tls_and_credentials() -> None:
    section = _mqtt(
        servers=["n1:8883", "n2:8883"],
        protocol="3.1.1",
        username="dock",
        tls={"insecure_skip_verify": True},
    )
    settings = section.forwarder_settings("gw")
    assert settings.servers == (("n1", 8883), ("n2", 8883))
    link = settings.link
    assert (link.host, link.port, link.server) == ("n1", 8883, "n1:8883")
    assert link.protocol == "3.1.1"
    assert link.username == "dock"
    assert link.tls is not None
    assert _mqtt(host="broker", port=1884).forwarder_settings("gw").servers == (("broker", 1884),)


def test_the_ring_tries_each_server_in_turn_and_wraps() -> None:
    ring = ServerRing((("n1", 1), ("n2", 2), ("n3", 3)))
    seen = []
    for _ in range(7):
        seen.append(ring.current[0])
        ring.failed()
    assert seen == ["n1", "n2", "n3", "n1", "n2", "n3", "n1"]


def test_backoff_grows_per_round_of_the_list_not_per_server() -> None:
    ring = ServerRing((("n1", 1), ("n2", 2), ("n3", 3)))
    assert [ring.backoff_attempt(f) for f in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    single = ServerRing((("only", 1),))
    assert [single.backoff_attempt(f) for f in range(3)] == [0, 1, 2]


def test_a_connection_to_another_server_than_the_last_one_is_a_failover() -> None:
    ring = ServerRing((("n1", 1), ("n2", 2)))
    assert ring.connected() is False  # the first connection is no failover
    ring.failed()  # link lost on n1: n2 next
    assert ring.connected() is True
    ring.failed()
    ring.failed()  # n1 failed, n2 again
    assert ring.connected() is False
    single = ServerRing((("only", 1),))
    single.connected()
    single.failed()
    assert single.connected() is False


def test_an_empty_ring_is_a_bug() -> None:
    with pytest.raises(ValueError, match="at least one server"):
        ServerRing(())


def test_server_names_bracket_ipv6() -> None:
    assert server_name(("::1", 1883)) == "[::1]:1883"
    assert server_name(("broker", 1883)) == "broker:1883"


def test_wms_sink_rejects_a_bad_servers_entry_with_exit_2_naming_the_option(
    tmp_path: Path,
) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "wms-sink",
            "--db",
            str(tmp_path / "wms.db"),
            "--protocol",
            "3.1.1",
            "--servers",
            "n1:1883,n2",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "--servers: 'n2' is not host:port" in out.stderr
    assert not (tmp_path / "wms.db").exists()
