"""The simulator's LLRP frames decode in sllurp with the right values; ROSpecs parse back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sllurp.llrp import LLRPClient, LLRPMessage, LLRPReaderConfig

from gateway.errors import ConfigError, FrameError
from gateway.readers.llrp import frames as f
from gateway.readers.llrp.scenario import (
    Pass,
    load_scenario,
    returns_door_scenario,
    scenario_from_dict,
    scenario_to_dict,
    sgtin96_hex,
)
from gateway.readers.llrp.simulator import replay_frames
from gateway.readers.simulate_cli import run_simulator

ROOT = Path(__file__).resolve().parents[2]


def decode(frame: bytes) -> tuple[str, dict[str, Any]]:
    msg = LLRPMessage(msgbytes=frame)
    name = msg.getName()
    return name, msg.msgdict[name]


def test_connection_attempt_event_decodes_as_success() -> None:
    name, body = decode(f.connection_attempt_event(7, 1_700_000_000_000_000))
    assert name == "READER_EVENT_NOTIFICATION"
    data = body["ReaderEventNotificationData"]
    assert data["ConnectionAttemptEvent"]["Status"] == "Success"
    assert data["UTCTimestamp"]["Microseconds"] == 1_700_000_000_000_000
    assert body["ID"] == 7


def test_capabilities_decode_and_satisfy_sllurp_parser() -> None:
    caps = f.Capabilities(antennas=4)
    name, body = decode(caps.response(3))
    assert name == "GET_READER_CAPABILITIES_RESPONSE"
    assert body["LLRPStatus"]["StatusCode"] == "Success"
    gdc = body["GeneralDeviceCapabilities"]
    assert gdc["MaxNumberOfAntennaSupported"] == 4
    assert gdc["DeviceManufacturerName"] == caps.manufacturer
    assert gdc["ModelName"] == caps.model
    band = body["RegulatoryCapabilities"]["UHFBandCapabilities"]
    powers = band["TransmitPowerLevelTableEntry"]
    assert len(powers) == len(caps.power_table_cdbm)
    assert powers[0] == {"Index": 1, "TransmitPowerValue": 1000}
    modes = band["UHFC1G2RFModeTable"]["UHFC1G2RFModeTableEntry"]
    assert [m["ModeIdentifier"] for m in modes] == [m.mode_id for m in caps.modes]
    # sllurp's own capability check accepts it and picks power and mode from it
    client = LLRPClient(
        LLRPReaderConfig({"antennas": [1, 4], "mode_identifier": 1002, "tx_power_dbm": 25.0})
    )
    client.parseCapabilities(body)
    assert client.reader_mode["ModeIdentifier"] == 1002
    assert client.tx_power_table[1] == 10.0
    assert client.config.tx_power == {1: 61, 4: 61}


@pytest.mark.parametrize("req", sorted(f.RESPONSE_TO))
def test_every_response_decodes_with_status(req: int) -> None:
    name, body = decode(f.response(req, 42, f.STATUS_FIELD_ERROR, "nope"))
    assert name.endswith("_RESPONSE")
    assert body["ID"] == 42
    assert body["LLRPStatus"]["StatusCode"] == "FieldError"
    assert body["LLRPStatus"]["ErrorDescription"] == b"nope"


def test_reader_config_and_keepalive_decode() -> None:
    name, body = decode(f.reader_config_response(5, 4, 1500))
    assert name == "GET_READER_CONFIG_RESPONSE"
    assert body["KeepaliveSpec"]["TimeInterval"] == 1500
    name, body = decode(f.keepalive(9))
    assert (name, body["ID"]) == ("KEEPALIVE", 9)


epcs = st.binary(min_size=2, max_size=62).filter(lambda b: len(b) % 2 == 0)


@given(
    epc=epcs,
    antenna=st.integers(1, 64),
    rssi=st.integers(-128, 127),
    channel=st.integers(0, 0xFFFF),
    first=st.integers(0, 2**63),
    count=st.integers(1, 0xFFFF),
    flags=st.integers(0, 1023).map(lambda x: x << 6),
)
def test_tag_reports_round_trip_through_sllurp(
    epc: bytes, antenna: int, rssi: int, channel: int, first: int, count: int, flags: int
) -> None:
    sel = f.ContentSelector.from_flags(flags)
    assert sel.to_flags() == flags
    tag = f.TagReport(epc, antenna, rssi, channel, first, first + 5, count)
    name, body = decode(f.ro_access_report(1, [tag, tag], sel, 77))
    assert name == "RO_ACCESS_REPORT"
    got = body["TagReportData"]
    assert len(got) == 2
    one = got[0]
    assert one["EPC"] == epc.hex().encode()
    expect = {
        "ROSpecID": (sel.rospec_id, 77),
        "AntennaID": (sel.antenna_id, antenna),
        "PeakRSSI": (sel.peak_rssi, rssi),
        "ChannelIndex": (sel.channel_index, channel),
        "FirstSeenTimestampUTC": (sel.first_seen, first),
        "LastSeenTimestampUTC": (sel.last_seen, first + 5),
        "TagSeenCount": (sel.tag_seen_count, count),
    }
    for key, (enabled, value) in expect.items():
        assert (one.get(key) == value) if enabled else (key not in one), key


def test_rospec_from_sllurp_parses() -> None:
    cfg = LLRPReaderConfig({"antennas": [2, 3], "session": 1, "tag_population": 16})
    client = LLRPClient(cfg)
    client.parseCapabilities(decode(f.Capabilities().response(1))[1])
    rospec = client.getROSpec()
    frame = LLRPMessage(msgdict={"ADD_ROSPEC": {"ROSpecID": 1, "ROSpec": rospec, "ID": 4}})
    spec = f.ROSpec.from_add_rospec(f.Message.from_bytes(frame.msgbytes).body)
    assert spec.rospec_id == 1
    assert spec.antennas == (2, 3)
    assert spec.start_trigger == 1
    assert [(a.antenna, a.session, a.tag_population) for a in spec.antenna_settings] == [
        (2, 1, 16),
        (3, 1, 16),
    ]
    # sllurp's default selector, as the driver's tests check the driver asks for all fields
    assert spec.selector == f.ContentSelector(
        rospec_id=False,
        antenna_id=False,
        channel_index=True,
        peak_rssi=False,
        first_seen=False,
        last_seen=True,
        tag_seen_count=True,
    )


@pytest.mark.parametrize(
    "data",
    [b"", b"\x04\x00\x00\x00\x00\x05", b"\x04\x14\x00\x00\x00\x0a\x00\x00\x00\x01"],
)
def test_bad_frames_raise_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        f.ROSpec.from_add_rospec(f.Message.from_bytes(data).body)


def test_recorded_frames_split_whole(conformance: Path) -> None:
    frames = replay_frames(conformance / "llrp" / "ltk" / "dx101_b.bin")
    assert (
        sum(len(x) for x in frames) == (conformance / "llrp" / "ltk" / "dx101_b.bin").stat().st_size
    )
    edgex = replay_frames(conformance / "llrp" / "edgex" / "ROAccessReport-001.bytes")
    assert decode(edgex[0])[0] == "RO_ACCESS_REPORT"


def test_sgtin96_known_vector() -> None:
    # TDS 1.13 E.3: urn:epc:tag:sgtin-96:3.0614141.812345.6789
    assert sgtin96_hex("0614141", "812345", 6789, filter_value=3) == "3074257BF7194E4000001A85"


def test_generated_scenario_shape_and_round_trip() -> None:
    sc = returns_door_scenario(items=50, pallets=5, strays=4, in_and_out=2, seed=3)
    roles = [t.role for t in sc.tags]
    assert roles.count("pallet") == 50
    assert roles.count("stray") == 4
    assert roles.count("in-and-out") == 2
    assert len({t.epc_hex for t in sc.tags}) == 56
    assert all(t.epc_hex.startswith("30") and len(t.epc_hex) == 24 for t in sc.tags)
    assert scenario_from_dict(scenario_to_dict(sc)) == sc


def test_pass_reads_add_up_over_any_split() -> None:
    p = Pass(1.0, 3.0, (1,), reads_per_s=7.0)
    assert p.reads_between(0.0, 10.0) == 14
    assert sum(p.reads_between(t / 10, (t + 1) / 10) for t in range(100)) == 14


def test_shipped_scenarios_load() -> None:
    for path in sorted((ROOT / "scenarios").glob("*.toml")):
        assert load_scenario(path).tags, path


def test_bad_scenario_names_key() -> None:
    with pytest.raises(ConfigError) as info:
        scenario_from_dict({"duration_s": 1, "faults": [{"at_s": 1, "kind": "explode"}]})
    assert info.value.key == "faults[0].kind"
    with pytest.raises(ConfigError) as info:
        scenario_from_dict({"duration_s": 1, "colour": "red"})
    assert info.value.key == "colour"


def test_simulate_cli_rejects_bad_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("duration_s = 1\ncolour = 'red'\n")
    assert run_simulator(0, bad) == 2
    assert run_simulator(0, tmp_path / "missing.toml") == 2
