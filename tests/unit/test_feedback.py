"""Door feedback: verdicts over committed movements, the light's hold, GPO frames, the config."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import LlrpReader, parse_config
from gateway.daemon.feedback import DockFeedback
from gateway.daemon.wiring import gpo_ports
from gateway.domain.feedback import Light, Verdict, verdicts, worst
from gateway.domain.movements import Evidence, Item, Movement, MovementType
from gateway.errors import ConfigError
from gateway.profiles import find_profile, llrp_settings
from gateway.readers.llrp import frames as f
from gateway.readers.llrp.gpio import (
    GpoLatch,
    gpi_event,
    gpo_write,
    gpo_write_body,
    gpo_writes,
)

_EVIDENCE = Evidence(source="rfid", reader="door-1-portal", first_seen_s=1.0, last_seen_s=2.0)


def _movement(
    station: str = "door-1",
    *,
    kind: MovementType = "receipt",
    expected: bool | None = True,
    flags: tuple[str, ...] = (),
) -> Movement:
    return Movement(
        id="x",
        type=kind,
        occurred_at_s=2.0,
        station=station,
        item=Item(epc="urn:epc:id:sgtin:0614141.812345.1"),
        evidence=_EVIDENCE,
        expected=expected,
        flags=flags,
    )


@pytest.mark.parametrize(
    ("movements", "reversed_at", "want"),
    [
        ([_movement()], [], {"door-1": "expected"}),
        ([_movement(), _movement(expected=False)], [], {"door-1": "unexpected"}),
        ([_movement(), _movement(flags=("duplicate",))], [], {"door-1": "problem"}),
        ([_movement(expected=False), _movement(flags=("duplicate",))], [], {"door-1": "problem"}),
        ([_movement(), _movement(flags=("surplus",))], [], {"door-1": "problem"}),
        ([_movement()], ["door-1"], {"door-1": "problem"}),
        ([], ["door-2"], {"door-2": "problem"}),
        ([_movement(kind="rma-complete")], [], {}),
        ([_movement(kind="inspection")], [], {}),
        (
            [_movement(), _movement("door-2", expected=False)],
            [],
            {"door-1": "expected", "door-2": "unexpected"},
        ),
    ],
)
def test_verdict_of_a_commit(
    movements: list[Movement], reversed_at: list[str], want: dict[str, Verdict]
) -> None:
    assert verdicts(movements, reversed_at) == want


@given(st.lists(st.sampled_from(["expected", "unexpected", "problem"]), min_size=1))
def test_worst_verdict_does_not_depend_on_order(seq: list[Verdict]) -> None:
    shown: Verdict | None = None
    for verdict in seq:
        shown = worst(shown, verdict)
    backwards: Verdict | None = None
    for verdict in reversed(seq):
        backwards = worst(backwards, verdict)
    assert shown == backwards
    assert shown == max(seq, key=["expected", "unexpected", "problem"].index)


def test_light_holds_the_worst_lit_verdict_then_goes_off() -> None:
    light = Light(hold_s=4.0)
    assert light.current(0.0) is None
    light.show("problem", 0.0)
    light.show("expected", 1.0)
    assert light.current(3.9) == "problem"
    assert light.next_change_s(3.9) == 4.0
    assert light.current(4.0) == "expected"  # the lesser verdict still has its own hold
    assert light.current(5.0) is None
    assert light.next_change_s(5.0) is None


def test_latch_writes_changes_only_and_everything_on_attach() -> None:
    latch = GpoLatch("door-1-portal")
    latch.set({1: True, 2: False})  # no session: remembered only
    writes: list[dict[int, bool]] = []

    def write(states: Any) -> None:
        writes.append(dict(states))

    latch.attach(write)
    assert writes == [{1: True, 2: False}]
    latch.set({1: True, 2: True})
    assert writes[-1] == {2: True}
    latch.detach(write)
    latch.set({1: False})
    assert len(writes) == 2
    assert latch.wanted == {1: False, 2: True}


def test_gpo_write_frame_round_trips() -> None:
    frame = gpo_write(7, {3: True, 1: False})
    head = f.Header.from_bytes(frame[: f.HEADER_LEN])
    assert (head.msg_type, head.msg_id, head.length) == (f.SET_READER_CONFIG, 7, len(frame))
    assert gpo_writes(frame[f.HEADER_LEN :]) == {1: False, 3: True}
    assert gpo_write_body({}) == b"\x00"


def test_gpi_event_frame_is_decoded_by_sllurp() -> None:
    from sllurp.llrp import LLRPMessage

    msg = LLRPMessage(msgbytes=gpi_event(9, 1, high=True, utc_us=1_000_000))
    event = msg.msgdict["READER_EVENT_NOTIFICATION"]["ReaderEventNotificationData"]["GPIEvent"]
    assert event["GPIPortNumber"] == 1
    assert event["GPIEvent"] is True


_BASE: dict[str, Any] = {
    "gateway": {"id": "dock-1", "site": "milan"},
    "stations": [
        {
            "id": "door-1",
            "kind": "receiving",
            "lights": {"reader": "door-1-portal", "expected": 1, "unexpected": 2, "problem": 3},
        },
        {"id": "bench-1", "kind": "inspection"},
    ],
    "readers": [
        {"kind": "llrp", "id": "door-1-portal", "station": "door-1", "host": "10.0.0.9"},
        {"kind": "tcp-scanner", "id": "gun", "station": "bench-1", "listen": "127.0.0.1:9100"},
    ],
}


def test_lights_config_is_accepted() -> None:
    config = parse_config(_BASE)
    lights = config.stations[0].lights
    assert lights is not None
    assert lights.hold_s == 4.0
    assert gpo_ports(config, "door-1-portal") == (1, 2, 3)
    assert gpo_ports(config, "gun") == ()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"reader": "nowhere"}, "stations.0.lights.reader"),
        ({"reader": "gun"}, "stations.0.lights.reader"),
        ({"problem": 1}, "stations.0.lights"),
        ({"problem": 0}, "stations.0.lights.problem"),
        ({"hold_s": 0}, "stations.0.lights.hold_s"),
        ({"colour": "red"}, "stations.0.lights.colour"),
    ],
)
def test_bad_lights_name_the_key(change: dict[str, Any], key: str) -> None:
    raw = copy.deepcopy(_BASE)
    raw["stations"][0]["lights"].update(change)
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert caught.value.key == key


def test_two_stations_driving_one_port_is_refused() -> None:
    raw = copy.deepcopy(_BASE)
    raw["stations"][1]["lights"] = {
        "reader": "door-1-portal",
        "expected": 4,
        "unexpected": 3,
        "problem": 5,
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert caught.value.key == "stations.1.lights.unexpected"
    assert "door-1" in str(caught.value)


def test_trigger_reaches_the_llrp_settings_and_a_bad_one_names_the_key() -> None:
    raw = copy.deepcopy(_BASE)
    raw["readers"][0]["trigger"] = {"gpi": 2, "linger_s": 1.5}
    reader = parse_config(raw).readers[0]
    assert isinstance(reader, LlrpReader)
    settings = llrp_settings(find_profile(reader.profile), reader)
    assert (settings.trigger_gpi, settings.trigger_linger_s) == (2, 1.5)
    assert not settings.trigger_by_gateway
    raw["readers"][0]["trigger"]["start"] = "gateway"
    reader = parse_config(raw).readers[0]
    assert isinstance(reader, LlrpReader)
    assert llrp_settings(find_profile(reader.profile), reader).trigger_by_gateway
    raw["readers"][0]["trigger"]["start"] = "beam"
    with pytest.raises(ConfigError) as bad_start:
        parse_config(raw)
    assert bad_start.value.key == "readers.0.trigger.start"
    raw["readers"][0]["trigger"] = {"gpi": 0}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert caught.value.key == "readers.0.trigger.gpi"


async def test_dock_feedback_lights_one_verdict_publishes_it_and_turns_it_off() -> None:
    raw = copy.deepcopy(_BASE)
    raw["stations"][0]["lights"]["hold_s"] = 0.1
    config = parse_config(raw)
    latches = DockFeedback.latches(config)
    published: list[tuple[str, dict[str, Any]]] = []

    async def publish(station: str, payload: bytes) -> None:
        published.append((station, json.loads(payload)))

    feedback = DockFeedback(
        config, latches, publish=publish, monotonic=time.monotonic, clock=time.time
    )
    runner = asyncio.create_task(feedback.run())
    try:
        await feedback.committed([_movement(), _movement(expected=False)])
        assert latches["door-1-portal"].wanted == {1: False, 2: True, 3: False}
        assert feedback.shown("door-1") == "unexpected"
        async with asyncio.timeout(2.0):
            while feedback.shown("door-1") is not None:
                await asyncio.sleep(0.01)
        assert latches["door-1-portal"].wanted == {1: False, 2: False, 3: False}
        # A station without lights still publishes its verdict.
        await feedback.committed([_movement("bench-1", flags=("duplicate",))])
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert [(s, p["verdict"]) for s, p in published] == [
        ("door-1", "unexpected"),
        ("door-1", None),
        ("bench-1", "problem"),
    ]
    assert published[0][1]["schema"] == "dock-gateway/feedback/1"
