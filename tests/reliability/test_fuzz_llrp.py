"""Fuzzing the LLRP input path: bad frames from a fake reader over real TCP into the real driver.

The fake reader is the product's simulator (it does the real LLRP handshake with real sllurp);
once the driver is inventorying, the test writes fuzzed frames into the connection, then keeps
sending a valid RO_ACCESS_REPORT carrying a marker tag. The driver must either deliver the marker
(it skipped and counted what it could not decode) or raise ReaderUnavailable, within a bound; it
must never raise anything else, never hang, and leave no reader thread behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from gateway.domain.events import InputHeard, TagRead
from gateway.errors import FrameError, ReaderUnavailable
from gateway.readers.llrp import client as client_module
from gateway.readers.llrp import driver as driver_module
from gateway.readers.llrp import frames, mapping, scenario, simulator
from gateway.readers.llrp import settings as settings_module
from gateway.runtime.bridge import ThreadBridge
from tests.support.own_loop import run_on_own_loop

KEEPALIVE_S = 0.5
# Silence is declared after two keepalive intervals; the rest is slack for a loaded machine.
HANG_LIMIT_S = 2 * KEEPALIVE_S + 4.0
MARKER_EVERY_S = 0.05
THREAD_EXIT_S = 3.0
MARKER_EPC = "3074257BF7194E4000C0FFEE"
OTHER_EPC = "3074257BF7194E4000001A85"

CODEC = settings(max_examples=400, deadline=None, database=None)
WIRE = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- frames a broken reader might send ------------------------------------------------------------


def _tag(epc_hex: str, antenna: int = 1) -> frames.TagReport:
    now_us = int(time.time() * 1_000_000)
    return frames.TagReport(bytes.fromhex(epc_hex), antenna, -50, 1, now_us, now_us)


def _report(msg_id: int, epcs: list[str]) -> bytes:
    data: bytes = frames.ro_access_report(
        msg_id, [_tag(e) for e in epcs], frames.ContentSelector(), 1
    )
    return data


def _with_length(frame: bytes, length: int) -> bytes:
    return frame[:2] + struct.pack("!I", length) + frame[6:]


def _truncated(frame: bytes, cut: int) -> bytes:
    """The frame cut after `cut` bytes, its header length telling the truth about the cut."""
    short = frame[: max(10, cut)]
    return _with_length(short, len(short))


valid_reports = st.lists(
    st.sampled_from([OTHER_EPC, "3074257BF7194E4000001A86", "E2801160600002"]), max_size=3
).map(lambda epcs: _report(7, epcs))

tlv_tree = st.recursive(
    st.builds(
        frames.tlv,
        st.integers(0, 1023),
        st.binary(max_size=12),
    ),
    lambda inner: st.builds(
        lambda ptype, children: frames.tlv(ptype, b"".join(children)),
        st.integers(0, 1023) | st.sampled_from([240, 241, 246, 256, 287, 128]),
        st.lists(inner, max_size=3),
    ),
    max_leaves=8,
)
tv_params = st.builds(
    lambda ptype, value: bytes([0x80 | ptype]) + value,
    st.integers(0, 127),
    st.binary(max_size=10),
)


def _message(msg_type: int, body: bytes, msg_id: int = 9) -> bytes:
    data: bytes = frames.Message(msg_type, msg_id, body).to_bytes()
    return data


report_types = st.sampled_from([61, 63, 62, 100, 1023]) | st.integers(0, 1023)
well_framed = st.one_of(
    # truncated: a valid report cut short, header length corrected (a TLV cut mid-way)
    st.builds(_truncated, valid_reports, st.integers(10, 120)),
    # unknown parameter types, TLV and TV, in a report or a keepalive
    st.builds(
        lambda t, params: _message(t, b"".join(params)),
        st.sampled_from([61, 62]),
        st.lists(tlv_tree | tv_params, min_size=1, max_size=4),
    ),
    # nested TLVs inside a TagReportData
    st.builds(
        lambda children: _message(61, frames.tlv(240, b"".join(children))),
        st.lists(tlv_tree, min_size=1, max_size=3),
    ),
    # random bytes as the body of a correctly framed report
    st.binary(max_size=64).map(lambda body: _message(61, body)),
)
bad_frames = st.one_of(
    # random bytes, as if the stream were noise
    st.binary(min_size=1, max_size=64),
    # truncated: a valid report cut short, header length corrected (a TLV cut mid-way)
    st.builds(_truncated, valid_reports, st.integers(10, 120)),
    # length-lying: a valid report whose header length is anything
    st.builds(
        _with_length,
        valid_reports,
        st.integers(0, 200) | st.sampled_from([0, 9, 10, 2**31, 2**32 - 1, 17 << 20]),
    ),
    # unknown parameter types, TLV and TV, in a message of any type
    st.builds(
        lambda t, params: _message(t, b"".join(params)),
        report_types,
        st.lists(tlv_tree | tv_params, min_size=1, max_size=4),
    ),
    # nested TLVs inside a TagReportData
    st.builds(
        lambda children: _message(61, frames.tlv(240, b"".join(children))),
        st.lists(tlv_tree, min_size=1, max_size=3),
    ),
)


# -- the codec alone (pure): only FrameError ------------------------------------------------------


@CODEC
@given(data=st.binary(max_size=80) | bad_frames)
def test_codec_header_message_and_params_only_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        frames.Header.from_bytes(data)
    with contextlib.suppress(FrameError):
        message = frames.Message.from_bytes(data)
        assert message.to_bytes() == data[:2] + data[2:] or message.msg_type >= 0
    with contextlib.suppress(FrameError):
        for param in frames.iter_params(data):
            assert 0 <= param.param_type <= 1023
    with contextlib.suppress(FrameError):
        frames.parse_keepalive_ms(data)


@CODEC
@given(body=st.binary(max_size=60) | tlv_tree | st.lists(tlv_tree, max_size=3).map(b"".join))
@example(
    body=frames.tlv(
        frames.P_ROSPEC,
        struct.pack("!IBB", 1, 0, 0)
        + frames.tlv(frames.P_ROBOUNDARY_SPEC, frames.tlv(frames.P_ROSPEC_START_TRIGGER, b"")),
    )
)
def test_codec_add_rospec_only_frame_error(body: bytes) -> None:
    with contextlib.suppress(FrameError):
        frames.ROSpec.from_add_rospec(body)


u64 = st.integers(0, 2**64 - 1)
sllurp_values: st.SearchStrategy[object] = st.one_of(
    st.none(),
    st.booleans(),
    u64,
    st.integers(-128, 127),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=30),
)
tag_dicts = st.fixed_dictionaries(
    {},
    optional={
        "EPC": st.sampled_from([OTHER_EPC.lower().encode(), b"", b"zz", b"30 74"]) | sllurp_values,
        "EPC-96": st.just(OTHER_EPC.lower().encode()) | sllurp_values,
        "AntennaID": sllurp_values,
        "PeakRSSI": sllurp_values,
        "ChannelIndex": sllurp_values,
        "TagSeenCount": sllurp_values,
        "FirstSeenTimestampUTC": sllurp_values,
        "LastSeenTimestampUTC": sllurp_values,
    },
)


@CODEC
@given(tag=tag_dicts, received_at_s=st.floats(0.0, 4e9))
def test_mapping_of_sllurp_tag_dicts_only_frame_error(
    tag: dict[str, object], received_at_s: float
) -> None:
    try:
        mapped = mapping.map_tag(tag, reader="fuzz", station="door-3", received_at_s=received_at_s)
    except FrameError:
        return
    read = mapped.read
    assert read.epc_hex
    assert set(read.epc_hex) <= set("0123456789ABCDEF")
    assert read.read_count >= 1


@CODEC
@given(
    data=st.binary(max_size=200) | st.lists(bad_frames | valid_reports, max_size=4).map(b"".join)
)
def test_replay_file_of_any_bytes_only_frame_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("replay") / "fuzz.bin"
    path.write_bytes(data)
    try:
        replayed = simulator.replay_frames(path)
    except FrameError:
        return
    assert b"".join(replayed) == data[: sum(len(frame) for frame in replayed)]


# -- the wire: a real driver against a fake reader over TCP ---------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the driver did after the fuzzed frames."""

    recovered: bool  # the marker tag came through
    lost: bool  # ReaderUnavailable
    frame_errors: int
    elapsed_s: float


async def _marker_loop(writer: asyncio.StreamWriter) -> None:
    msg_id = 100
    while not writer.is_closing():
        msg_id += 1
        writer.write(_report(msg_id, [MARKER_EPC]))
        await asyncio.sleep(MARKER_EVERY_S)


async def _run(fuzzed: list[bytes]) -> Outcome:
    llrp_settings = settings_module.LlrpSettings(
        keepalive_s=KEEPALIVE_S, connect_timeout_s=5.0, disconnect_timeout_s=1.0
    )
    empty = scenario.Scenario(name="fuzz", duration_s=600.0)
    async with simulator.LlrpSimulator(empty) as sim:
        driver = driver_module.LlrpDriver("fuzz", "door-3", "127.0.0.1", sim.port, llrp_settings)
        async with driver:
            (session,) = list(sim._sessions)
            writer = session._writer
            for frame in fuzzed:
                writer.write(frame)
            marker = asyncio.create_task(_marker_loop(writer), name="fuzz-marker")
            started = time.monotonic()
            recovered = lost = False
            try:
                async with asyncio.timeout(HANG_LIMIT_S):
                    async for event in driver.events():
                        if isinstance(event, InputHeard):
                            continue
                        assert isinstance(event, TagRead), "an LLRP driver yields reads and marks"
                        if event.epc_hex == MARKER_EPC:
                            recovered = True
                            break
            except ReaderUnavailable:
                lost = True
            except TimeoutError:
                pytest.fail(f"driver neither recovered nor gave up within {HANG_LIMIT_S}s")
            finally:
                marker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await marker
            elapsed_s = time.monotonic() - started
        return Outcome(recovered, lost, driver.frame_errors, elapsed_s)


def _reader_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.is_alive() and t.name.startswith(("sllurp-", "llrp-blocking-call"))
    ]


def _drive(fuzzed: list[bytes]) -> Outcome:
    before = set(_reader_threads())
    outcome = run_on_own_loop(_run(fuzzed))
    deadline = time.monotonic() + THREAD_EXIT_S
    while time.monotonic() < deadline and set(_reader_threads()) - before:
        threading.Event().wait(0.05)
    leaked = set(_reader_threads()) - before
    assert not leaked, f"reader threads left running: {[t.name for t in leaked]}"
    assert outcome.recovered != outcome.lost
    return outcome


def test_wire_clean_stream_delivers_the_marker() -> None:
    outcome = _drive([])
    assert outcome.recovered
    assert outcome.frame_errors == 0


def test_wire_undecodable_but_framed_report_is_counted_and_skipped() -> None:
    # TagReportData with an EPCData claiming 200 bytes inside a correctly framed message.
    body = frames.tlv(240, struct.pack("!HH", 241, 200) + b"\x00\x60")
    outcome = _drive([_message(61, body)])
    assert outcome.recovered
    assert outcome.frame_errors >= 1


def test_wire_unframeable_length_gives_the_connection_up() -> None:
    outcome = _drive([_with_length(_report(7, [OTHER_EPC]), 3)])
    assert outcome.lost
    assert outcome.frame_errors >= 1


@WIRE
@given(fuzzed=st.lists(bad_frames, min_size=1, max_size=4))
def test_wire_fuzzed_frames_recover_or_give_up_never_hang(fuzzed: list[bytes]) -> None:
    outcome = _drive(fuzzed)
    assert outcome.elapsed_s < HANG_LIMIT_S
    event("recovered" if outcome.recovered else "gave up")
    event(f"frame errors: {min(outcome.frame_errors, 3)}")


@WIRE
@given(fuzzed=st.lists(well_framed, min_size=1, max_size=4))
def test_wire_well_framed_garbage_is_skipped_and_the_connection_goes_on(
    fuzzed: list[bytes],
) -> None:
    outcome = _drive(fuzzed)
    assert outcome.recovered, f"gave up after {outcome.frame_errors} frame errors"


class _RacingSocket:
    """A socket whose shutdown lets a second thread run hard_disconnect meanwhile (the race)."""

    def __init__(self, client: object) -> None:
        self._client = client
        self._other: threading.Thread | None = None
        self.closed = 0

    def shutdown(self, how: int) -> None:
        if self._other is None:
            # What the reader thread does in raw_data_received on an unframeable stream, while
            # the loop's _hard_close is between sllurp's `if self._socket:` and `.close()`.
            self._other = threading.Thread(
                target=self._client.hard_disconnect,  # type: ignore[attr-defined]
                name="fuzz-racing-disconnect",
            )
            self._other.start()
            self._other.join(0.5)

    def close(self) -> None:
        self.closed += 1

    def join(self) -> None:
        if self._other is not None:
            self._other.join(2.0)


# Found by the fuzz test above (AttributeError out of __aexit__); fixed in client.LlrpClient.
async def test_hard_disconnect_from_two_threads_raises_nothing() -> None:
    client = client_module.LlrpClient(
        "127.0.0.1",
        9,
        client_module.sllurp_config(settings_module.LlrpSettings()),
        bridge=ThreadBridge(10, name="fuzz"),
        reader="fuzz",
        clock=time.time,
    )
    racing = _RacingSocket(client)
    client._socket = racing  # type: ignore[assignment]  # stands in for sllurp's socket
    try:
        client.hard_disconnect()
    finally:
        racing.join()
    assert client._socket is None
    assert racing.closed == 1
