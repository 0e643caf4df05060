"""The real LLRP driver (sllurp inside) against the real simulator over real TCP."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
from sllurp.llrp import LLRPMessage

from gateway.domain.events import InputHeard, TagRead
from gateway.errors import ReaderRejectedConfig, ReaderUnavailable
from gateway.readers.llrp.driver import LlrpDriver
from gateway.readers.llrp.scenario import Fault, Scenario, returns_door_scenario
from gateway.readers.llrp.settings import LlrpSettings
from gateway.readers.llrp.simulator import LlrpSimulator, replay_frames

FAST = LlrpSettings(keepalive_s=1.0, connect_timeout_s=5.0, disconnect_timeout_s=2.0)
# Replays of recorded reports decode tens of thousands of reads: on a loaded machine a two-keepalive
# pause is no silent reader. Silence has its own test with FAST.
REPLAY = LlrpSettings(keepalive_s=5.0, connect_timeout_s=5.0, disconnect_timeout_s=2.0)


async def collect(
    driver: LlrpDriver, stop: Callable[[list[TagRead]], bool], timeout_s: float
) -> tuple[list[TagRead], BaseException | None]:
    """Read events until `stop` says so, the driver fails, or `timeout_s` passes."""
    reads: list[TagRead] = []
    error: BaseException | None = None
    try:
        async with asyncio.timeout(timeout_s):
            async for ev in driver.events():
                if isinstance(ev, InputHeard):
                    continue
                assert isinstance(ev, TagRead)
                reads.append(ev)
                if stop(reads):
                    break
    except TimeoutError:
        pass
    except ReaderUnavailable as exc:
        error = exc
    return reads, error


def state(driver: LlrpDriver) -> str:
    """The driver's state, read fresh (keeps mypy from narrowing a mutable attribute)."""
    return driver.health.state


def sllurp_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sllurp-")]


def small_scenario(*faults: Fault) -> Scenario:
    return returns_door_scenario(
        items=12,
        pallets=2,
        strays=3,
        in_and_out=1,
        duration_s=8.0,
        reads_per_s=6.0,
        faults=faults,
    )


def sllurp_tags(frames: list[bytes]) -> tuple[int, int, set[str]]:
    """(tag reports with an EPC that sllurp decodes, frames it cannot decode, EPCs)."""
    count = bad = 0
    epcs: set[str] = set()
    for frame in frames:
        try:
            msg = LLRPMessage(msgbytes=frame)
        except Exception:
            bad += 1
            continue
        if msg.getName() == "RO_ACCESS_REPORT":
            tags = [t for t in msg.msgdict["RO_ACCESS_REPORT"]["TagReportData"] if t.get("EPC")]
            count += len(tags)
            epcs.update(t["EPC"].decode().upper() for t in tags if "EPC" in t)
    return count, bad, epcs


async def test_scenario_tags_arrive_with_epc_antenna_rssi() -> None:
    scenario = small_scenario()
    async with LlrpSimulator(scenario, speed=4.0) as sim:
        async with LlrpDriver("door-3-portal", "door-3", "127.0.0.1", sim.port, FAST) as drv:
            assert state(drv) == "inventorying"
            reads, error = await collect(drv, lambda _r: sim.finished.is_set(), 10.0)
            # reads sent just before `finished` may still be in flight: take them too
            more, _ = await collect(
                drv, lambda r: len(r) + len(reads) >= sim.record.tag_reads_sent, 2.0
            )
        assert error is None
        reads += more
        assert {r.epc_hex for r in reads} == sim.expected_epcs()
        assert len(reads) == sim.record.tag_reads_sent
        assert all(r.reader == "door-3-portal" and r.station == "door-3" for r in reads)
        strays = sim.expected_epcs("stray")
        assert {r.antenna for r in reads if r.epc_hex in strays} <= {3, 4}
        assert all(r.rssi_dbm is not None and -80 <= r.rssi_dbm <= -40 for r in reads)
        assert all(r.channel is not None for r in reads)
        assert all(abs(r.at_s - time.time()) < 60 for r in reads)
        assert drv.clock_replaced == 0
        # what the reader was told
        spec = sim.record.last_rospec
        assert spec is not None
        assert spec.antennas == (1, 2, 3, 4)
        assert spec.start_trigger == 1
        assert spec.ai_stop_trigger == 0  # no tag-count stop trigger (sllurp #218)
        assert spec.report_n == 1
        assert spec.selector.antenna_id
        assert spec.selector.peak_rssi
        assert spec.selector.first_seen
        assert {a.session for a in spec.antenna_settings} == {2}
        assert sim.record.keepalive_ms == 1000
    assert state(drv) == "idle"


async def test_profile_settings_reach_the_reader() -> None:
    settings = LlrpSettings(
        antennas=(1, 3),
        power_dbm_by_antenna=((1, 20.0), (3, 25.0)),
        mode_identifier=1002,
        session=1,
        tag_population=32,
        report_every_n_tags=5,
        keepalive_s=1.0,
    )
    async with LlrpSimulator(small_scenario()) as sim:
        async with LlrpDriver("r", "s", "127.0.0.1", sim.port, settings):
            pass
        spec = sim.record.last_rospec
        assert spec is not None
        assert spec.antennas == (1, 3)
        by_ant = {a.antenna: a for a in spec.antenna_settings}
        # power table starts at 10.00 dBm in 0.25 dB steps, index 1
        assert by_ant[1].power_index == 41
        assert by_ant[3].power_index == 61
        assert {a.mode_index for a in spec.antenna_settings} == {1002}
        assert {(a.session, a.tag_population) for a in spec.antenna_settings} == {(1, 32)}
        assert spec.report_n == 5
        assert spec.ai_stop_trigger == 0
        assert {a.search_mode for a in spec.antenna_settings} == {None}


async def test_impinj_search_mode_reaches_the_reader() -> None:
    settings = LlrpSettings(search_mode=2, keepalive_s=1.0)
    async with LlrpSimulator(small_scenario()) as sim:
        async with LlrpDriver("r", "s", "127.0.0.1", sim.port, settings) as drv:
            assert state(drv) == "inventorying"
        spec = sim.record.last_rospec
        assert spec is not None
        assert {a.search_mode for a in spec.antenna_settings} == {2}


async def test_rejected_rospec_raises_rejected_config() -> None:
    async with LlrpSimulator(small_scenario()) as sim:
        sim.reject_next("ADD_ROSPEC", reason="bad mode")
        with pytest.raises(ReaderRejectedConfig) as info:
            async with LlrpDriver("r", "s", "127.0.0.1", sim.port, FAST):
                pytest.fail("entered despite rejection")
        assert "bad mode" in info.value.reason
        assert sim.record.rejected == ["ADD_ROSPEC"]
        # the next attempt goes through: the rejection was for one message only
        async with LlrpDriver("r", "s", "127.0.0.1", sim.port, FAST) as drv:
            assert state(drv) == "inventorying"


async def test_connection_refused_is_reader_unavailable() -> None:
    async with LlrpSimulator(small_scenario()) as sim:
        port = sim.port
    started = time.monotonic()
    with pytest.raises(ReaderUnavailable):
        async with LlrpDriver("r", "s", "127.0.0.1", port, FAST):
            pass
    assert time.monotonic() - started < 6.0


async def test_drop_raises_promptly_and_reentry_works() -> None:
    async with LlrpSimulator(small_scenario(Fault(1.0, "drop")), speed=2.0) as sim:
        drv = LlrpDriver("r", "s", "127.0.0.1", sim.port, FAST)
        async with drv:
            _reads, error = await collect(drv, lambda _r: False, 5.0)
        assert isinstance(error, ReaderUnavailable)
        assert state(drv) == "down"
        assert "drop" in sim.record.faults_fired
        # the supervisor re-enters the same driver after backoff
        async with drv:
            assert state(drv) == "inventorying"
            more, error2 = await collect(drv, lambda r: len(r) >= 5, 5.0)
        assert error2 is None
        assert len(more) >= 5
        assert sim.record.connections == 2
    assert sllurp_threads() == []


async def test_silent_reader_detected_within_two_keepalives() -> None:
    async with LlrpSimulator(small_scenario(Fault(1.0, "silent")), speed=1.0) as sim:
        drv = LlrpDriver("r", "s", "127.0.0.1", sim.port, FAST)
        async with drv:
            _, error = await collect(drv, lambda _r: False, 8.0)
            silent_at = sim.scenario_time_s()
        assert isinstance(error, ReaderUnavailable)
        assert state(drv) == "silent"
        assert silent_at is not None
        assert silent_at - 1.0 <= 2.0 * FAST.keepalive_s + 1.0
        async with drv:
            assert state(drv) == "inventorying"


async def test_corrupt_frame_is_counted_and_reading_goes_on() -> None:
    async with LlrpSimulator(small_scenario(Fault(0.5, "corrupt")), speed=2.0) as sim:
        async with LlrpDriver("r", "s", "127.0.0.1", sim.port, FAST) as drv:
            reads, error = await collect(drv, lambda r: drv.frame_errors == 1 and len(r) > 50, 8.0)
        assert error is None
        assert drv.frame_errors == 1
        assert drv.health.bad_input == 1
        assert len(reads) > 0


async def _replay(
    path: Path, timeout_s: float, speed: float = 1.0
) -> tuple[LlrpDriver, list[TagRead], BaseException | None, LlrpSimulator]:
    expected, _bad, _ = sllurp_tags(replay_frames(path))
    scenario = Scenario("replay", 1.0 + timeout_s, faults=(Fault(0.2, "replay", str(path)),))
    async with (
        LlrpSimulator(scenario, speed=speed) as sim,
        LlrpDriver("r", "s", "127.0.0.1", sim.port, REPLAY) as drv,
    ):
        reads, error = await collect(drv, lambda r: len(r) >= expected, timeout_s)
    return drv, reads, error, sim


@pytest.mark.parametrize(
    "name", ["ltk/dx101_b.bin", *(f"edgex/ROAccessReport-00{i}.bytes" for i in range(1, 10))]
)
async def test_recorded_reports_every_tag_read(conformance: Path, name: str) -> None:
    path = conformance / "llrp" / name
    expected, bad, epcs = sllurp_tags(replay_frames(path))
    assert expected > 0
    assert bad == 0
    _drv, reads, error, _ = await _replay(path, 6.0)
    assert error is None
    assert len(reads) == expected
    assert {r.epc_hex for r in reads} == epcs


async def test_dx101_c_large_reports_every_tag_read(conformance: Path) -> None:
    path = conformance / "llrp" / "ltk" / "dx101_c.bin"
    drv, reads, error, _ = await _replay(path, 40.0)
    assert error is None
    # 32,705 TagReportData: one carries an empty EPC and is counted as bad input, not a read
    assert len(reads) == 32_704
    assert drv.health.bad_input == 1
    assert drv.lost_reads == 0


async def test_dx101_e_decoder_crash_is_contained(conformance: Path) -> None:
    path = conformance / "llrp" / "ltk" / "dx101_e.bin"
    frames = replay_frames(path)
    expected, bad, _ = sllurp_tags(frames)
    assert bad >= 73  # the AISpecEvent crashes among them
    scenario = Scenario("replay", 10.0, faults=(Fault(0.2, "replay", str(path)),))
    async with LlrpSimulator(scenario) as sim:
        drv = LlrpDriver("r", "s", "127.0.0.1", sim.port, FAST)
        async with drv:
            # the last frames may be undecodable: wait for the reads, then a moment for them
            reads, error = await collect(drv, lambda r: len(r) >= expected, 8.0)
            rest, error2 = await collect(drv, lambda _r: True, 1.0)
        assert error is None, "the connection survives undecodable frames"
        assert error2 is None
        assert len(reads) == expected
        assert rest == []
        assert drv.frame_errors == bad
        assert sllurp_threads() == []
        # the reader thread is still alive and reading after the bad frames
        async with drv:
            assert state(drv) == "inventorying"


async def test_aexit_is_bounded_when_reader_hangs() -> None:
    async with LlrpSimulator(small_scenario(Fault(0.3, "silent"))) as sim:
        drv = LlrpDriver("r", "s", "127.0.0.1", sim.port, FAST)
        await drv.__aenter__()
        await asyncio.sleep(0.6)  # the reader is now mute; a polite stop gets no answer
        started = time.monotonic()
        await drv.__aexit__(None, None, None)
        assert time.monotonic() - started < 6.0
        assert sllurp_threads() == []


async def test_returns_door_every_item_arrives() -> None:
    scenario = returns_door_scenario(seed=5, duration_s=60.0)
    async with (
        LlrpSimulator(scenario, speed=8.0) as sim,
        LlrpDriver("door-3-portal", "door-3", "127.0.0.1", sim.port, FAST) as drv,
    ):
        reads, error = await collect(drv, lambda _r: sim.finished.is_set(), 15.0)
        more, _ = await collect(
            drv, lambda r: len(r) + len(reads) >= sim.record.tag_reads_sent, 2.0
        )
    assert error is None
    assert sim.finished.is_set()
    got = {r.epc_hex for r in reads + more}
    assert got == sim.expected_epcs()
    assert len(sim.expected_epcs("pallet")) == 500
    assert len(reads) + len(more) == sim.record.tag_reads_sent
    assert drv.lost_reads == 0


async def test_mute_reader_at_handshake_times_out_or_cancels_cleanly() -> None:
    settings = LlrpSettings(keepalive_s=1.0, connect_timeout_s=1.0, disconnect_timeout_s=1.0)
    async with LlrpSimulator(small_scenario()) as sim:
        sim.mute_new_connections = True
        drv = LlrpDriver("r", "s", "127.0.0.1", sim.port, settings)
        started = time.monotonic()
        with pytest.raises(ReaderUnavailable):
            async with drv:
                pytest.fail("entered a mute reader")
        assert time.monotonic() - started < 3.0
        assert state(drv) == "down"
        task = asyncio.create_task(drv.__aenter__())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert state(drv) == "down"
        sim.mute_new_connections = False
        async with drv:
            assert state(drv) == "inventorying"
        assert drv.health.reconnects == 2


async def test_unset_reader_clock_replaced_by_receive_time() -> None:
    scenario = dataclasses.replace(small_scenario(), clock_unset=True)
    async with (
        LlrpSimulator(scenario, speed=4.0) as sim,
        LlrpDriver("r", "s", "127.0.0.1", sim.port, FAST) as drv,
    ):
        reads, error = await collect(drv, lambda r: len(r) >= 20, 5.0)
    assert error is None
    assert len(reads) >= 20
    assert drv.clock_replaced == len(reads)
    assert all(abs(r.at_s - time.time()) < 30 for r in reads)
    assert drv.health.detail["clock_replaced"] == str(len(reads))


async def until(condition: Callable[[], bool], timeout_s: float) -> None:
    """Let the loop run until `condition` holds; TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_slow_consumer_loses_no_read_and_the_reader_thread_stops_reading() -> None:
    settings = dataclasses.replace(FAST, max_pending_reads=20)
    scenario = returns_door_scenario(seed=7, items=40, pallets=2, strays=4, duration_s=12.0)
    async with (
        LlrpSimulator(scenario, speed=4.0) as sim,
        LlrpDriver("r", "s", "127.0.0.1", sim.port, settings) as drv,
    ):
        reads: list[TagRead] = []
        paused = False
        async with asyncio.timeout(20.0):
            async for ev in drv.events():
                if isinstance(ev, InputHeard):
                    if sim.finished.is_set() and len(reads) >= sim.record.tag_reads_sent:
                        break
                    continue
                assert isinstance(ev, TagRead)
                reads.append(ev)
                if not paused and len(reads) == 10:
                    # Stop taking: the bridge fills and the reader thread stops reading.
                    paused = True
                    await until(lambda: drv.pushed_back, 5.0)
                    held_bytes = drv.bytes_received
                    sent = sim.record.tag_reads_sent
                    await asyncio.sleep(0.5)
                    assert drv.pushed_back
                    assert drv.bytes_received == held_bytes, "read its socket while full"
                    assert sim.record.tag_reads_sent > sent, "the reader kept sending meanwhile"
                elif len(reads) % 10 == 0:
                    await asyncio.sleep(0.01)  # slow from then on too
    assert paused
    assert sim.finished.is_set()
    assert len(reads) == sim.record.tag_reads_sent
    assert {r.epc_hex for r in reads} == sim.expected_epcs()
    assert drv.lost_reads == 0


async def test_heard_marks_follow_the_reads_before_them_and_advance_while_idle() -> None:
    # An unset reader clock: every read is stamped with its receive time, as the marks are.
    scenario = dataclasses.replace(small_scenario(), clock_unset=True)
    items: list[TagRead | InputHeard] = []
    async with (
        LlrpSimulator(scenario, speed=4.0) as sim,
        LlrpDriver("r", "s", "127.0.0.1", sim.port, FAST) as drv,
    ):
        idle_since: float | None = None
        async with asyncio.timeout(15.0):
            async for ev in drv.events():
                assert isinstance(ev, TagRead | InputHeard)
                items.append(ev)
                done = sim.finished.is_set() and sum(isinstance(i, TagRead) for i in items) >= (
                    sim.record.tag_reads_sent
                )
                if done and idle_since is None:
                    idle_since = time.time()
                if idle_since is not None and time.time() - idle_since > 0.6:
                    break
    reads = [i for i in items if isinstance(i, TagRead)]
    assert len(reads) == sim.record.tag_reads_sent
    marks = [i for i in items if isinstance(i, InputHeard)]
    assert {m.reader for m in marks} == {"r"}
    # A mark at t comes after every read received before t and before every read received after.
    # Marks are on the monotonic clock, reads on the wall clock: one offset joins them (to 1 ms).
    offset_s = time.time() - time.monotonic()
    stamps = [i.at_s if isinstance(i, TagRead) else (i.mono_s or 0.0) + offset_s for i in items]
    assert all(b >= a - 0.001 for a, b in pairwise(stamps))
    # While the reader sends nothing, marks keep coming (every 100 ms or so) and move on.
    assert idle_since is not None
    idle = [m.mono_s for m in marks if m.mono_s is not None and m.mono_s + offset_s >= idle_since]
    assert len(idle) >= 3
    assert max(b - a for a, b in pairwise(idle)) < 0.4
