"""How config becomes parts: reader driver factories, the movement renderer, the pipeline plan."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from gateway.buffer.keys import replay_epoch_key
from gateway.buffer.store import Buffer
from gateway.config import (
    Config,
    HidScanner,
    LlrpReader,
    MqttScanner,
    ReaderSection,
    ReplayReader,
    SerialScanner,
    TcpScanner,
    load_gs1_rules,
)
from gateway.domain.barcodes import Patterns
from gateway.domain.movements import Movement
from gateway.domain.pipeline import PipelinePlan, StationPlan
from gateway.domain.smoothing import SmoothingSettings
from gateway.domain.wire import render_movement_json
from gateway.errors import GatewayError
from gateway.gs1 import BIIP_GS1
from gateway.profiles import Profile, llrp_settings
from gateway.readers.base import ReaderDriver
from gateway.readers.llrp.gpio import GpoLatch
from gateway.readers.replay import ReplayDriver
from gateway.runtime.inbound import Delivery, InboundLane


def driver_factory(
    reader: ReaderSection,
    *,
    profiles: Mapping[str, Profile],
    replay_epochs: Mapping[str, float],
    clock: Callable[[], float],
    scans: InboundLane[Delivery] | None = None,
    outputs: GpoLatch | None = None,
    gpo_ports: tuple[int, ...] = (),
) -> Callable[[], ReaderDriver]:
    """A maker of fresh drivers for one reader; LLRP ones read the reader's profile at each call.

    `scans` is the lane the broker link fills with MQTT scans (for an `mqtt-scanner` reader);
    `outputs` and `gpo_ports` are an LLRP reader's stack light (the GPOs station lights drive).
    """
    if isinstance(reader, ReplayReader):
        epoch_s = replay_epochs.get(reader.id, clock())

        def replay() -> ReaderDriver:
            return ReplayDriver(
                reader.id,
                reader.station,
                reader.file,
                rate_per_s=reader.rate_per_s,
                epoch_s=epoch_s,
            )

        return replay
    if isinstance(reader, SerialScanner):
        from gateway.readers.serial import SerialScannerDriver  # noqa: PLC0415 - loads pyserial only when used

        return lambda: SerialScannerDriver(
            reader.id,
            reader.station,
            reader.url,
            baud=reader.baud,
            suffix=reader.suffix,
            inter_char_timeout_s=reader.inter_char_timeout_s,
            max_scan_bytes=reader.max_scan_bytes,
            clock=clock,
        )
    if isinstance(reader, TcpScanner):
        from gateway.readers.tcp import TcpScannerDriver  # noqa: PLC0415

        return lambda: TcpScannerDriver(
            reader.id,
            reader.station,
            reader.listen,
            devices=reader.devices,
            device_stations=reader.device_stations,
            max_line_bytes=reader.max_line_bytes,
            idle_timeout_s=reader.idle_timeout_s,
            clock=clock,
        )
    if isinstance(reader, HidScanner):
        from gateway.readers.hid.driver import HidScannerDriver  # noqa: PLC0415 - loads evdev only when used

        return lambda: HidScannerDriver(
            reader.id,
            reader.station,
            reader.device,
            gs_key=reader.gs_key,
            grab=reader.grab,
            max_scan_bytes=reader.max_scan_bytes,
            clock=clock,
        )
    if isinstance(reader, LlrpReader):
        return _llrp_factory(reader, profiles, clock, outputs, gpo_ports)
    if isinstance(reader, MqttScanner) and scans is not None:
        from gateway.readers.mqtt import MqttScannerDriver  # noqa: PLC0415

        lane = scans
        return lambda: MqttScannerDriver(
            reader.id,
            reader.station,
            lane,
            device_stations=reader.device_stations,
            max_scan_chars=reader.max_scan_chars,
            clock=clock,
        )
    raise GatewayError(f"no driver for reader kind {reader.kind}")


def gpo_ports(config: Config, reader_id: str) -> tuple[int, ...]:
    """The GPO ports of a reader that station lights drive."""
    ports = {
        port
        for station in config.stations
        if station.lights is not None and station.lights.reader == reader_id
        for port in station.lights.ports().values()
    }
    return tuple(sorted(ports))


def scan_lane(config: Config) -> InboundLane[Delivery] | None:
    """The lane from the broker link to the `mqtt-scanner` reader, if one is configured."""
    if any(isinstance(reader, MqttScanner) for reader in config.readers):
        return InboundLane()
    return None


def make_renderer(config: Config) -> Callable[[Movement, int], bytes]:
    """The function that turns a movement and its seq into the bytes the outbox keeps."""
    site, gateway = config.gateway.site, config.gateway.id
    if config.mqtt.format == "epcis":
        from gateway.domain.epcis import EpcisContext, render_epcis  # noqa: PLC0415

        context = EpcisContext(
            site=site,
            gateway=gateway,
            station_uris={s.id: s.location_uri for s in config.stations if s.location_uri},
            uri_base=config.epcis.uri_base,
        )

        def render_epcis_or_json(movement: Movement, seq: int) -> bytes:
            return render_epcis(movement, seq, context) or render_movement_json(
                movement, seq, site, gateway
            )

        return render_epcis_or_json
    return lambda movement, seq: render_movement_json(movement, seq, site, gateway)


def pipeline_plan(config: Config, profiles: Mapping[str, Profile] | None = None) -> PipelinePlan:
    """What the pure pipeline needs from the config and the readers' profiles."""
    stations = {
        s.id: StationPlan(
            id=s.id,
            kind=s.kind,
            smoothing=SmoothingSettings(
                rssi_floor_dbm=s.rssi_floor_dbm,
                absent_s=s.absent_s,
                stray_dwell_s=s.stray_dwell_s,
                min_confidence=s.min_confidence,
                reversal_hold_s=s.reversal_hold_s,
                stray_rssi_dbm=s.stray_rssi_dbm,
                leak_margin_db=s.leak_margin_db,
            ),
            rescan_window_s=s.rescan_window_s,
            rma_timeout_s=s.rma_timeout_s,
            location=s.location_uri,
        )
        for s in config.stations
    }
    zones = {r.id: r.zones for r in config.readers if isinstance(r, LlrpReader) and r.zones}
    p = config.patterns
    patterns = Patterns.compile(
        rma=p.rma, rma_close=p.rma_close, location=p.location, disposition=p.disposition
    )
    rules = load_gs1_rules(p.gs1_dictionary)
    floors = {reader: p.reader.rssi_floor_dbm for reader, p in (profiles or {}).items()}
    return PipelinePlan(
        gateway=config.gateway.id,
        stations=stations,
        gs1=BIIP_GS1,
        zones=zones,
        patterns=patterns,
        rules=rules,
        reader_floors_dbm=floors,
    )


async def load_replay_epochs(
    buffer: Buffer, config: Config, clock: Callable[[], float]
) -> dict[str, float]:
    """Fix each replay file's start time at its first run: restarts replay identical events."""
    epochs: dict[str, float] = {}
    for reader in config.readers:
        if not isinstance(reader, ReplayReader):
            continue
        key = replay_epoch_key(reader.id, reader.file)
        stored = await buffer.kv_get(key)
        if stored is None:
            epoch_s = clock()
            await buffer.kv_put(key, repr(epoch_s).encode())
        else:
            epoch_s = float(stored)
        epochs[reader.id] = epoch_s
    return epochs


def _llrp_factory(
    reader: LlrpReader,
    profiles: Mapping[str, Profile],
    clock: Callable[[], float],
    outputs: GpoLatch | None,
    gpo_ports: tuple[int, ...],
) -> Callable[[], ReaderDriver]:
    from gateway.readers.llrp.driver import LlrpDriver  # noqa: PLC0415 - loads sllurp only when used

    def make() -> ReaderDriver:
        # Looked up at each connect: a profile switch restarts the session with the new entry.
        settings = dataclasses.replace(
            llrp_settings(profiles[reader.id], reader), gpo_ports=gpo_ports
        )
        return LlrpDriver(
            reader.id,
            reader.station,
            reader.host,
            reader.port,
            settings,
            clock=clock,
            outputs=outputs,
        )

    return make
