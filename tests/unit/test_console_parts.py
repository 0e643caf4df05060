"""The console's parts without a browser: tags-in-view table, login throttle, feed, config."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.config import is_loopback_listen, parse_config
from gateway.console.activity import RecentActivity
from gateway.console.auth import (
    LOGIN_FAILURES_MAX,
    LOGIN_WINDOW_S,
    PENDING_SESSIONS_MAX,
    SESSIONS_MAX,
    SITE_GUESSES_MAX,
    LoginThrottle,
    Sessions,
    password_matches,
)
from gateway.console.feed import LiveFeed
from gateway.console.tags import TagsInView, matches
from gateway.domain.events import TagRead
from gateway.domain.expected import ExpectedReturns
from gateway.errors import ConfigError
from gateway.profiles import DEFAULT_PROFILE_DIR, Profile

SGTIN = "3034257BF7194E4000000064"  # urn:epc:id:sgtin:0614141.812345.100, GTIN 80614141123458


def _read(
    epc: str = SGTIN, antenna: int = 1, rssi: float | None = -60.0, at_s: float = 1.0
) -> TagRead:
    return TagRead("portal", "door-3", epc, antenna, at_s, rssi_dbm=rssi)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_table_counts_per_antenna_keeps_peak_and_decodes_at_tick() -> None:
    table = TagsInView(max_tags=10, expire_s=5.0)
    table.observe(_read(antenna=1, rssi=-60.0))
    table.observe(_read(antenna=3, rssi=-48.5, at_s=2.0))
    table.observe(_read(antenna=3, rssi=None, at_s=3.0))
    changes = table.tick(0.0)
    assert len(changes.changed) == 1
    row = changes.changed[0].row()
    assert row == (
        SGTIN,
        "urn:epc:id:sgtin:0614141.812345.100",
        "portal",
        "1:1 3:2",
        3,
        -48.5,
        3.0,
        "80614141123458",
        "100",
    )
    assert table.reads_by_antenna == {("portal", 1): 1, ("portal", 3): 2}
    # Nothing read since: nothing to send.
    assert table.tick(1.0).changed == []


def test_table_expires_unseen_tags_and_reports_them_removed() -> None:
    table = TagsInView(max_tags=10, expire_s=5.0)
    table.tick(0.0)
    table.observe(_read())
    table.tick(1.0)
    table.tick(4.0)
    table.observe(_read("3034257BF7194E4000000065"))
    assert table.tick(4.9).removed == []
    changes = table.tick(5.5)  # SGTIN was last read after the tick at 0.0: 5 s are up
    assert changes.removed == [SGTIN]
    assert changes.in_view == 1


def test_table_is_bounded_and_evicts_the_oldest_first() -> None:
    table = TagsInView(max_tags=100, expire_s=60.0)
    for serial in range(250):
        table.observe(_read(f"30342{serial:019X}"))
    assert len(table) <= 100
    assert table.evicted >= 150
    changes = table.tick(0.0)
    assert f"30342{0:019X}" in changes.removed
    assert f"30342{249:019X}" in {t.epc_hex for t in changes.changed}


def test_undecodable_tags_stay_as_raw_uris() -> None:
    table = TagsInView()
    table.observe(_read("E2801160600002"))
    (tag,) = table.tick(0.0).changed
    assert tag.uri is not None
    assert tag.uri.startswith("urn:epc:raw:")


@pytest.mark.parametrize(
    ("wanted", "hit"),
    [
        ("", True),
        ("3034", True),
        ("3034257bf7", True),
        ("E280", False),
        ("urn:epc:id:sgtin:0614141.812345.", True),
        ("urn:epc:id:sgtin:0614141.999999.", False),
        ("80614141123458", True),
        ("00000000000000", False),
    ],
)
def test_filter_by_epc_prefix_uri_prefix_or_gtin(wanted: str, hit: bool) -> None:
    table = TagsInView()
    table.observe(_read())
    (tag,) = table.tick(0.0).changed
    assert matches(tag, wanted) is hit


def test_throttle_allows_five_attempts_a_minute_per_address() -> None:
    clock = _Clock()
    throttle = LoginThrottle(clock)
    for _ in range(LOGIN_FAILURES_MAX):
        assert throttle.reserve("10.0.0.9") is None
    wait_s = throttle.reserve("10.0.0.9")
    assert wait_s is not None
    assert 1.0 <= wait_s <= 60.0
    assert throttle.reserve("10.0.0.10") is None  # another address is not punished
    clock.now = 61.0
    assert throttle.reserve("10.0.0.9") is None


def test_throttle_counts_one_ipv6_host_by_its_64_and_forgets_on_success() -> None:
    throttle = LoginThrottle(_Clock())
    for suffix in range(LOGIN_FAILURES_MAX):
        assert throttle.reserve(f"2001:db8:1:2::{suffix + 1:x}") is None
    assert throttle.reserve("2001:db8:1:2::ffff") is not None  # same /64: same client
    assert throttle.reserve("2001:db8:1:3::1") is None
    throttle.succeeded("2001:db8:1:2::1")
    assert throttle.reserve("2001:db8:1:2::1") is None


def test_site_ceiling_slows_many_addresses_for_at_most_a_minute() -> None:
    clock = _Clock()
    throttle = LoginThrottle(clock)
    clock.now = -3600.0
    assert throttle.reserve("10.9.9.9") is None
    throttle.succeeded("10.9.9.9")  # a technician's tablet that signed in an hour ago
    for n in range(SITE_GUESSES_MAX):
        clock.now = n * 0.5
        assert throttle.reserve(f"10.1.{n // 200}.{n % 200}") is None
    wait_s = throttle.reserve("10.2.0.1")
    assert wait_s is not None
    assert wait_s <= LOGIN_WINDOW_S
    # The technician's address is not held by the strangers' guesses.
    assert throttle.reserve("10.9.9.9") is None
    clock.now += wait_s
    assert throttle.reserve("10.2.0.1") is None


def test_sessions_expire_when_idle_and_csrf_compares() -> None:
    clock = _Clock()
    sessions = Sessions(clock)
    session = sessions.create("ana", "10.0.0.9", signed_in=True)
    assert sessions.get(session.token) is session
    assert session.csrf_ok(session.csrf)
    assert not session.csrf_ok(None)
    assert not session.csrf_ok(session.csrf[:-1] + "x")
    assert not session.csrf_ok(session.csrf[:-1] + "é")  # malformed: refused, not a TypeError
    clock.now = 9 * 3600.0
    assert sessions.get(session.token) is None
    assert password_matches("s3cret", "s3cret")
    assert not password_matches("s3cre", "s3cret")
    assert not password_matches("\ud800", "s3cret")  # a lone surrogate from JSON


def test_anonymous_sessions_never_push_out_proven_ones() -> None:
    sessions = Sessions(_Clock())
    signed_in = sessions.create("ana", "10.0.0.9", signed_in=True)
    page = sessions.create("local", "127.0.0.1", signed_in=False)
    assert sessions.get(page.token) is page  # its cookie came back: proven
    for _ in range(10 * SESSIONS_MAX):
        sessions.create("local", "127.0.0.1", signed_in=False)
    assert sessions.pending == PENDING_SESSIONS_MAX
    assert sessions.get(signed_in.token) is signed_in
    assert sessions.get(page.token) is page
    assert len(sessions) == 2


class _Source:
    """The daemon side as the console sees it, with fixed health."""

    def __init__(self) -> None:
        self.tags = TagsInView()
        self.activity = RecentActivity()

    def health(self) -> Mapping[str, Any]:
        reader = {"reader": "portal", "kind": "llrp", "state": "inventorying"}
        return {"readers": {"portal": reader}, "broker": {"connected": True}, "buffer": {}}

    def profiles_in_force(self) -> Mapping[str, Profile]:
        return {}

    def profile_dir(self) -> Path:
        return DEFAULT_PROFILE_DIR

    async def profile_history(self) -> list[dict[str, Any]]:
        return []

    async def apply_profile(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False}

    async def expected_returns(self, query: str) -> ExpectedReturns | None:
        return None


def _events(message: bytes | None) -> dict[str, Any]:
    assert message is not None
    found = {}
    for block in message.decode().strip().split("\n\n"):
        name, data = block.split("\n", 1)
        found[name.removeprefix("event: ")] = json.loads(data.removeprefix("data: "))
    return found


def test_feed_coalesces_reads_into_one_message_per_tick_and_resyncs_a_slow_page() -> None:
    source = _Source()
    clock = _Clock()
    feed = LiveFeed(source, 0.5, monotonic=clock)
    page = feed.subscribe("")
    gtin_page = feed.subscribe("80614141123458")
    for i in range(1000):
        source.tags.observe(_read(antenna=1 + i % 4))
    source.tags.observe(_read("E2801160600002"))
    feed.tick()
    first = _events(page.queue.get_nowait())
    assert first["tags"]["full"] is True
    assert len(first["tags"]["upsert"]) == 2  # 1001 reads, two tags: one message
    assert first["state"]["readers"][0]["state"] == "inventorying"
    assert len(_events(gtin_page.queue.get_nowait())["tags"]["upsert"]) == 1
    for tick in range(1, 10):
        clock.now = tick * 0.5
        source.tags.observe(_read())
        feed.tick()
    # The page read nothing: its queue stayed bounded and it will get the whole table again.
    assert page.queue.qsize() == 4
    assert page.full is True
    assert page.dropped > 0
    rates = feed.state()["readers"][0]["reads_per_s"]
    assert {port for port, rate in rates.items() if rate > 0} == {"1"}  # the last window


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:9108", True),
        ("127.0.0.2:9108", True),
        ("[::1]:9108", True),
        ("localhost:9108", True),
        (":9108", True),
        ("0.0.0.0:9108", False),
        ("192.168.1.20:9108", False),
        ("gateway.local:9108", False),
    ],
)
def test_loopback_listen(listen: str, loopback: bool) -> None:
    assert is_loopback_listen(listen) is loopback


def test_remote_listen_without_password_env_is_a_config_error_naming_the_key() -> None:
    raw: dict[str, Any] = {
        "gateway": {"id": "g", "site": "s"},
        "health": {"listen": "0.0.0.0:9108"},
    }
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert error.value.key == "console.password_env"
    parse_config({**raw, "console": {"password_env": "DOCK_CONSOLE_PASSWORD"}})
    parse_config({**raw, "health": {"listen": "0.0.0.0:9108", "enabled": False}})


def test_activity_keeps_strays_in_sight_of_a_busy_scan_bench() -> None:
    from gateway.domain.movements import Evidence, Item, Movement

    activity = RecentActivity(keep=10)
    activity.add_notice(
        "stray_tag", "door-3", {"epc": SGTIN, "reason": "dwell 0.2 s", "zones": ["outside"]}, 1.0
    )
    activity.add_notice("passage_reversed", "door-3", {"epc": SGTIN, "direction": "in-out"}, 2.0)
    activity.add_notice("something_else", "door-3", {}, 2.5)
    scans = [
        Movement(
            id=f"m{i}",
            type="inspection",
            occurred_at_s=3.0 + i,
            station="bench-1",
            item=Item(gtin="06141410000397", serial=str(i)),
            evidence=Evidence(source="barcode", reader="hh", first_seen_s=3.0, last_seen_s=3.0),
        )
        for i in range(50)
    ]
    activity.add_movements(scans, list(range(1, 51)))
    entries = activity.entries(8)
    assert len(entries) == 8
    refusals = [e for e in entries if e["seq"] is None]
    assert [e["reason"] for e in refusals] == [
        "reversed passage (in-out): the tag went back the way it came",
        "stray: dwell 0.2 s",
    ]
    assert [e["seq"] for e in entries if e["seq"]] == [50, 49, 48, 47, 46, 45]
    assert activity.find(["06141410000397:49"])[0]["seq"] == 50
