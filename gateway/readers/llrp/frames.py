"""LLRP 1.0.1 wire frames written from the spec with `struct`: headers, parameters, messages.

Only what a fixed reader sends and what the simulator must understand is here; this module does
not import sllurp (the tests check its bytes against sllurp's decoder).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from gateway.errors import FrameError

HEADER_LEN = 10
PROTOCOL_VERSION = 1

# Message types (LLRP 1.0.1 section 16.1).
GET_READER_CAPABILITIES = 1
GET_READER_CONFIG = 2
SET_READER_CONFIG = 3
CLOSE_CONNECTION_RESPONSE = 4
GET_READER_CAPABILITIES_RESPONSE = 11
GET_READER_CONFIG_RESPONSE = 12
SET_READER_CONFIG_RESPONSE = 13
CLOSE_CONNECTION = 14
ADD_ROSPEC = 20
DELETE_ROSPEC = 21
START_ROSPEC = 22
STOP_ROSPEC = 23
ENABLE_ROSPEC = 24
DISABLE_ROSPEC = 25
ADD_ROSPEC_RESPONSE = 30
DELETE_ROSPEC_RESPONSE = 31
START_ROSPEC_RESPONSE = 32
STOP_ROSPEC_RESPONSE = 33
ENABLE_ROSPEC_RESPONSE = 34
DISABLE_ROSPEC_RESPONSE = 35
DELETE_ACCESSSPEC = 41
DELETE_ACCESSSPEC_RESPONSE = 51
RO_ACCESS_REPORT = 61
KEEPALIVE = 62
READER_EVENT_NOTIFICATION = 63
ENABLE_EVENTS_AND_REPORTS = 64
KEEPALIVE_ACK = 72
ERROR_MESSAGE = 100
CUSTOM_MESSAGE = 1023

RESPONSE_TO: dict[int, int] = {
    GET_READER_CAPABILITIES: GET_READER_CAPABILITIES_RESPONSE,
    GET_READER_CONFIG: GET_READER_CONFIG_RESPONSE,
    SET_READER_CONFIG: SET_READER_CONFIG_RESPONSE,
    CLOSE_CONNECTION: CLOSE_CONNECTION_RESPONSE,
    ADD_ROSPEC: ADD_ROSPEC_RESPONSE,
    DELETE_ROSPEC: DELETE_ROSPEC_RESPONSE,
    START_ROSPEC: START_ROSPEC_RESPONSE,
    STOP_ROSPEC: STOP_ROSPEC_RESPONSE,
    ENABLE_ROSPEC: ENABLE_ROSPEC_RESPONSE,
    DISABLE_ROSPEC: DISABLE_ROSPEC_RESPONSE,
    DELETE_ACCESSSPEC: DELETE_ACCESSSPEC_RESPONSE,
}

# Parameter types (section 16.2).
P_UTC_TIMESTAMP = 128
P_GENERAL_DEVICE_CAPABILITIES = 137
P_RECEIVE_SENSITIVITY_ENTRY = 139
P_PER_ANTENNA_AIR_PROTOCOL = 140
P_GPIO_CAPABILITIES = 141
P_LLRP_CAPABILITIES = 142
P_REGULATORY_CAPABILITIES = 143
P_UHF_BAND_CAPABILITIES = 144
P_TRANSMIT_POWER_ENTRY = 145
P_FREQUENCY_INFORMATION = 146
P_FIXED_FREQUENCY_TABLE = 148
P_ROSPEC = 177
P_ROBOUNDARY_SPEC = 178
P_ROSPEC_START_TRIGGER = 179
P_GPI_TRIGGER_VALUE = 181
P_ROSPEC_STOP_TRIGGER = 182
P_AISPEC = 183
P_AISPEC_STOP_TRIGGER = 184
P_TAG_OBSERVATION_TRIGGER = 185
P_INVENTORY_PARAMETER_SPEC = 186
P_KEEPALIVE_SPEC = 220
P_ANTENNA_PROPERTIES = 221
P_ANTENNA_CONFIGURATION = 222
P_RF_TRANSMITTER = 224
P_RO_REPORT_SPEC = 237
P_TAG_REPORT_CONTENT_SELECTOR = 238
P_TAG_REPORT_DATA = 240
P_EPC_DATA = 241
P_READER_EVENT_NOTIFICATION_DATA = 246
P_CONNECTION_ATTEMPT_EVENT = 256
P_LLRP_STATUS = 287
P_C1G2_LLRP_CAPABILITIES = 327
P_UHF_C1G2_RF_MODE_TABLE = 328
P_UHF_C1G2_RF_MODE_ENTRY = 329
P_C1G2_INVENTORY_COMMAND = 330
P_C1G2_RF_CONTROL = 335
P_C1G2_SINGULATION_CONTROL = 336
P_CUSTOM = 1023

IMPINJ_VENDOR_ID = 25882
_IMPINJ_SEARCH_MODE = struct.pack("!II", IMPINJ_VENDOR_ID, 23)

# TV-encoded parameters in TagReportData: type -> struct of the value.
TV_ANTENNA_ID = 1
TV_FIRST_SEEN_UTC = 2
TV_LAST_SEEN_UTC = 4
TV_PEAK_RSSI = 6
TV_CHANNEL_INDEX = 7
TV_TAG_SEEN_COUNT = 8
TV_ROSPEC_ID = 9
TV_INVENTORY_PARAMETER_SPEC_ID = 10
TV_EPC_96 = 13
TV_SPEC_INDEX = 14
TV_ACCESS_SPEC_ID = 16

STATUS_SUCCESS = 0
STATUS_PARAMETER_ERROR = 100
STATUS_FIELD_ERROR = 101
STATUS_INVALID_ROSPEC_ID = 103

_HEADER = struct.Struct("!HII")
_PARAM_HEADER = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class Header:
    """The 10-byte LLRP message header; `length` counts the whole message."""

    version: int
    msg_type: int
    length: int
    msg_id: int

    def to_bytes(self) -> bytes:
        """The header on the wire."""
        return _HEADER.pack(
            ((self.version & 0x7) << 10) | (self.msg_type & 0x3FF), self.length, self.msg_id
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        """Parse a header; FrameError when short or with a length below the header size."""
        if len(data) < HEADER_LEN:
            raise FrameError("llrp", f"header needs {HEADER_LEN} bytes, got {len(data)}")
        word, length, msg_id = _HEADER.unpack_from(data)
        if length < HEADER_LEN:
            raise FrameError("llrp", f"message length {length} below header size")
        return cls((word >> 10) & 0x7, word & 0x3FF, length, msg_id)


@dataclass(frozen=True, slots=True)
class Message:
    """One LLRP message: type, id and body (parameters, without the header)."""

    msg_type: int
    msg_id: int
    body: bytes = b""

    def to_bytes(self) -> bytes:
        """The whole frame: header plus body."""
        head = Header(PROTOCOL_VERSION, self.msg_type, HEADER_LEN + len(self.body), self.msg_id)
        return head.to_bytes() + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> Message:
        """Parse one whole frame; FrameError if `data` is not exactly one message."""
        head = Header.from_bytes(data)
        if head.length != len(data):
            raise FrameError("llrp", f"length field {head.length} != {len(data)} bytes")
        return cls(head.msg_type, head.msg_id, bytes(data[HEADER_LEN:]))


@dataclass(frozen=True, slots=True)
class Param:
    """One TLV parameter: type and value (without its 4-byte header)."""

    param_type: int
    value: bytes

    def children(self, skip: int) -> list[Param]:
        """The TLV parameters that follow `skip` bytes of fixed fields."""
        return list(iter_params(self.value[skip:]))


def tlv(param_type: int, value: bytes) -> bytes:
    """Encode a TLV parameter."""
    return _PARAM_HEADER.pack(param_type & 0x3FF, 4 + len(value)) + value


def tv(param_type: int, fmt: str, *values: int) -> bytes:
    """Encode a TV parameter (type byte with the high bit set, then the fixed-size value)."""
    return bytes([0x80 | param_type]) + struct.pack("!" + fmt, *values)


def iter_params(data: bytes) -> Iterator[Param]:
    """Walk TLV parameters; FrameError on a TV parameter or a length that overruns."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise FrameError("llrp", "truncated parameter header")
        if data[pos] & 0x80:
            raise FrameError("llrp", f"unexpected TV parameter {data[pos] & 0x7F}")
        ptype, plen = _PARAM_HEADER.unpack_from(data, pos)
        if plen < 4 or pos + plen > len(data):
            raise FrameError("llrp", f"parameter {ptype & 0x3FF} length {plen} overruns")
        yield Param(ptype & 0x3FF, bytes(data[pos + 4 : pos + plen]))
        pos += plen


def llrp_status(code: int = STATUS_SUCCESS, description: str = "") -> bytes:
    """An LLRPStatus parameter."""
    text = description.encode()
    return tlv(P_LLRP_STATUS, struct.pack("!HH", code, len(text)) + text)


def response(
    msg_type: int, msg_id: int, code: int = STATUS_SUCCESS, description: str = ""
) -> bytes:
    """The response to request `msg_type`, echoing `msg_id`, carrying only an LLRPStatus."""
    return Message(RESPONSE_TO[msg_type], msg_id, llrp_status(code, description)).to_bytes()


def connection_attempt_event(msg_id: int, utc_us: int, status: int = 0) -> bytes:
    """READER_EVENT_NOTIFICATION with ConnectionAttemptEvent (0 = Success)."""
    data = tlv(P_UTC_TIMESTAMP, struct.pack("!Q", utc_us)) + tlv(
        P_CONNECTION_ATTEMPT_EVENT, struct.pack("!H", status)
    )
    return Message(
        READER_EVENT_NOTIFICATION, msg_id, tlv(P_READER_EVENT_NOTIFICATION_DATA, data)
    ).to_bytes()


def impinj_enable_extensions_response(msg_id: int, body: bytes) -> bytes | None:
    """IMPINJ_ENABLE_EXTENSIONS_RESPONSE if `body` (of a CUSTOM_MESSAGE) asks for it."""
    if len(body) < 5 or struct.unpack_from("!IB", body) != (IMPINJ_VENDOR_ID, 21):
        return None
    reply = struct.pack("!IB", IMPINJ_VENDOR_ID, 22) + llrp_status()
    return Message(CUSTOM_MESSAGE, msg_id, reply).to_bytes()


def keepalive(msg_id: int) -> bytes:
    """A KEEPALIVE message."""
    return Message(KEEPALIVE, msg_id).to_bytes()


@dataclass(frozen=True, slots=True)
class RfMode:
    """One UHF C1G2 RF mode table entry."""

    mode_id: int
    bdr_bps: int
    pie: int
    min_tari_ns: int
    max_tari_ns: int
    step_tari_ns: int = 0
    modulation: int = 1  # 0 FM0, 1 M2, 2 M4, 3 M8
    forward_link: int = 1

    def to_bytes(self) -> bytes:
        """The UHFC1G2RFModeTableEntry parameter."""
        return tlv(
            P_UHF_C1G2_RF_MODE_ENTRY,
            struct.pack(
                "!IBBBBIIIII",
                self.mode_id,
                0x80,  # DR 64/3, EPC HAG T&C not claimed
                self.modulation,
                self.forward_link,
                0,
                self.bdr_bps,
                self.pie,
                self.min_tari_ns,
                self.max_tari_ns,
                self.step_tari_ns,
            ),
        )


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the simulated reader says it is and can do."""

    manufacturer: int = 25882
    model: int = 2001002
    firmware: str = "sim-1.0"
    antennas: int = 4
    power_table_cdbm: tuple[int, ...] = tuple(range(1000, 3025, 25))
    modes: tuple[RfMode, ...] = (
        RfMode(0, 640_000, 1500, 6250, 6250),
        RfMode(1, 640_000, 1500, 6250, 6250, modulation=0),
        RfMode(2, 274_000, 2000, 20000, 20000, modulation=2),
        RfMode(1002, 160_000, 2000, 20000, 20000, modulation=2),
    )
    frequencies_khz: tuple[int, ...] = (865_700, 866_300, 866_900, 867_500)
    gpis: int = 4
    gpos: int = 4

    def response(self, msg_id: int) -> bytes:
        """GET_READER_CAPABILITIES_RESPONSE describing this reader."""
        fw = self.firmware.encode()
        gdc = tlv(
            P_GENERAL_DEVICE_CAPABILITIES,
            struct.pack("!HHIIH", self.antennas, 0x4000, self.manufacturer, self.model, len(fw))
            + fw
            + tlv(P_RECEIVE_SENSITIVITY_ENTRY, struct.pack("!Hh", 1, 0))
            + b"".join(
                tlv(P_PER_ANTENNA_AIR_PROTOCOL, struct.pack("!HHB", ant, 1, 1))
                for ant in range(1, self.antennas + 1)
            )
            + tlv(P_GPIO_CAPABILITIES, struct.pack("!HH", self.gpis, self.gpos)),
        )
        llrp_caps = tlv(P_LLRP_CAPABILITIES, struct.pack("!BBHIIIII", 0x10, 0, 0, 1, 1, 1, 0, 0))
        powers = b"".join(
            tlv(P_TRANSMIT_POWER_ENTRY, struct.pack("!Hh", index, value))
            for index, value in enumerate(self.power_table_cdbm, start=1)
        )
        freq = tlv(
            P_FREQUENCY_INFORMATION,
            b"\x00"
            + tlv(
                P_FIXED_FREQUENCY_TABLE,
                struct.pack(
                    f"!H{len(self.frequencies_khz)}I",
                    len(self.frequencies_khz),
                    *self.frequencies_khz,
                ),
            ),
        )
        modes = tlv(P_UHF_C1G2_RF_MODE_TABLE, b"".join(m.to_bytes() for m in self.modes))
        regulatory = tlv(
            P_REGULATORY_CAPABILITIES,
            struct.pack("!HH", 978, 2) + tlv(P_UHF_BAND_CAPABILITIES, powers + freq + modes),
        )
        c1g2 = tlv(P_C1G2_LLRP_CAPABILITIES, struct.pack("!BH", 0x80, 2))
        body = llrp_status() + gdc + llrp_caps + regulatory + c1g2
        return Message(GET_READER_CAPABILITIES_RESPONSE, msg_id, body).to_bytes()


def reader_config_response(
    msg_id: int, antennas: int, keepalive_ms: int, gpi_high: Mapping[int, bool] | None = None
) -> bytes:
    """GET_READER_CONFIG_RESPONSE: status, antenna properties, keepalive spec, GPI levels."""
    props = b"".join(
        tlv(P_ANTENNA_PROPERTIES, struct.pack("!BHh", 0x80, ant, 0))
        for ant in range(1, antennas + 1)
    )
    kspec = tlv(P_KEEPALIVE_SPEC, struct.pack("!BI", 1 if keepalive_ms else 0, keepalive_ms))
    gpis = b"".join(  # GPIPortCurrentState: enabled, and high (1) or low (0)
        tlv(225, struct.pack("!HBB", port, 0x80, int(high)))
        for port, high in sorted((gpi_high or {}).items())
    )
    body = llrp_status() + props + kspec + gpis
    return Message(GET_READER_CONFIG_RESPONSE, msg_id, body).to_bytes()


@dataclass(frozen=True, slots=True)
class ContentSelector:
    """Which TagReportData fields the client asked for (TagReportContentSelector)."""

    rospec_id: bool = True
    spec_index: bool = False
    inventory_parameter_spec_id: bool = False
    antenna_id: bool = True
    channel_index: bool = True
    peak_rssi: bool = True
    first_seen: bool = True
    last_seen: bool = True
    tag_seen_count: bool = True
    access_spec_id: bool = False

    @classmethod
    def from_flags(cls, flags: int) -> ContentSelector:
        """Decode the 16-bit enable flags."""
        bit = [bool(flags & (1 << (15 - i))) for i in range(10)]
        return cls(*bit)

    def to_flags(self) -> int:
        """Encode the 16-bit enable flags."""
        values = (
            self.rospec_id,
            self.spec_index,
            self.inventory_parameter_spec_id,
            self.antenna_id,
            self.channel_index,
            self.peak_rssi,
            self.first_seen,
            self.last_seen,
            self.tag_seen_count,
            self.access_spec_id,
        )
        return sum(1 << (15 - i) for i, on in enumerate(values) if on)


@dataclass(frozen=True, slots=True)
class TagReport:
    """One tag observation the simulator reports."""

    epc: bytes
    antenna: int
    rssi_dbm: int
    channel: int
    first_seen_us: int
    last_seen_us: int
    seen_count: int = 1

    def to_bytes(self, sel: ContentSelector, rospec_id: int) -> bytes:  # noqa: C901 - one line per field
        """TagReportData with the fields `sel` asks for, in the spec's order."""
        if len(self.epc) == 12:
            parts = [bytes([0x80 | TV_EPC_96]) + self.epc]
        else:
            parts = [tlv(P_EPC_DATA, struct.pack("!H", len(self.epc) * 8) + self.epc)]
        if sel.rospec_id:
            parts.append(tv(TV_ROSPEC_ID, "I", rospec_id))
        if sel.spec_index:
            parts.append(tv(TV_SPEC_INDEX, "H", 1))
        if sel.inventory_parameter_spec_id:
            parts.append(tv(TV_INVENTORY_PARAMETER_SPEC_ID, "H", 1))
        if sel.antenna_id:
            parts.append(tv(TV_ANTENNA_ID, "H", self.antenna))
        if sel.peak_rssi:
            parts.append(tv(TV_PEAK_RSSI, "b", max(-128, min(127, self.rssi_dbm))))
        if sel.channel_index:
            parts.append(tv(TV_CHANNEL_INDEX, "H", self.channel))
        if sel.first_seen:
            parts.append(tv(TV_FIRST_SEEN_UTC, "Q", self.first_seen_us))
        if sel.last_seen:
            parts.append(tv(TV_LAST_SEEN_UTC, "Q", self.last_seen_us))
        if sel.tag_seen_count:
            parts.append(tv(TV_TAG_SEEN_COUNT, "H", min(self.seen_count, 0xFFFF)))
        if sel.access_spec_id:
            parts.append(tv(TV_ACCESS_SPEC_ID, "I", 0))
        return tlv(P_TAG_REPORT_DATA, b"".join(parts))


def ro_access_report(
    msg_id: int, tags: list[TagReport], sel: ContentSelector, rospec_id: int
) -> bytes:
    """RO_ACCESS_REPORT carrying `tags`."""
    body = b"".join(t.to_bytes(sel, rospec_id) for t in tags)
    return Message(RO_ACCESS_REPORT, msg_id, body).to_bytes()


@dataclass(frozen=True, slots=True)
class AntennaSettings:
    """What an ROSpec's AntennaConfiguration asked of one antenna."""

    antenna: int
    power_index: int | None = None
    mode_index: int | None = None
    tari: int | None = None
    session: int | None = None
    tag_population: int | None = None
    search_mode: int | None = None  # Impinj InventorySearchMode custom parameter


@dataclass(frozen=True, slots=True)
class ROSpec:
    """The parts of an ADD_ROSPEC that a test or a profile check needs to see."""

    rospec_id: int
    priority: int
    start_trigger: int
    stop_trigger: int
    antennas: tuple[int, ...]
    ai_stop_trigger: int
    report_trigger: int
    report_n: int
    selector: ContentSelector
    antenna_settings: tuple[AntennaSettings, ...] = field(default=())
    start_gpi: tuple[int, bool] | None = None  # GPI start trigger: port and level that starts

    @classmethod
    def from_add_rospec(cls, body: bytes) -> ROSpec:
        """Decode the ROSpec inside an ADD_ROSPEC body; FrameError if malformed."""
        try:
            return _parse_rospec(body)
        except (struct.error, IndexError) as exc:
            raise FrameError("llrp", f"ROSpec: {exc}") from exc


def parse_keepalive_ms(set_config_body: bytes) -> int | None:
    """The KeepaliveSpec interval in a SET_READER_CONFIG body, or None if absent or off."""
    try:
        for p in iter_params(set_config_body[1:]):
            if p.param_type == P_KEEPALIVE_SPEC:
                trigger, interval = struct.unpack_from("!BI", p.value)
                return int(interval) if trigger == 1 else None
    except struct.error as exc:
        raise FrameError("llrp", f"KeepaliveSpec: {exc}") from exc
    return None


def _parse_rospec(body: bytes) -> ROSpec:  # noqa: C901, PLR0912 - follows the parameter tree
    spec = next((p for p in iter_params(body) if p.param_type == P_ROSPEC), None)
    if spec is None:
        raise FrameError("llrp", "ADD_ROSPEC without ROSpec")
    rospec_id, priority, _state = struct.unpack_from("!IBB", spec.value)
    start = stop = ai_stop = report_trigger = report_n = 0
    start_gpi: tuple[int, bool] | None = None
    antennas: tuple[int, ...] = ()
    selector = ContentSelector()
    ant_settings: list[AntennaSettings] = []
    for p in spec.children(6):
        if p.param_type == P_ROBOUNDARY_SPEC:
            for q in p.children(0):
                if q.param_type == P_ROSPEC_START_TRIGGER:
                    start = q.value[0]
                    for r in q.children(1):
                        if r.param_type == P_GPI_TRIGGER_VALUE:
                            port, flags, _timeout = struct.unpack_from("!HBI", r.value)
                            start_gpi = (port, bool(flags & 0x80))
                elif q.param_type == P_ROSPEC_STOP_TRIGGER:
                    stop = q.value[0]
        elif p.param_type == P_AISPEC:
            (count,) = struct.unpack_from("!H", p.value)
            antennas = struct.unpack_from(f"!{count}H", p.value, 2)
            for q in p.children(2 + 2 * count):
                if q.param_type == P_AISPEC_STOP_TRIGGER:
                    ai_stop = q.value[0]
                elif q.param_type == P_INVENTORY_PARAMETER_SPEC:
                    ant_settings.extend(
                        _antenna_settings(r)
                        for r in q.children(3)
                        if r.param_type == P_ANTENNA_CONFIGURATION
                    )
        elif p.param_type == P_RO_REPORT_SPEC:
            report_trigger, report_n = struct.unpack_from("!BH", p.value)
            for q in p.children(3):
                if q.param_type == P_TAG_REPORT_CONTENT_SELECTOR:
                    selector = ContentSelector.from_flags(struct.unpack_from("!H", q.value)[0])
    return ROSpec(
        rospec_id,
        priority,
        start,
        stop,
        antennas,
        ai_stop,
        report_trigger,
        report_n,
        selector,
        tuple(ant_settings),
        start_gpi,
    )


def _antenna_settings(p: Param) -> AntennaSettings:
    (antenna,) = struct.unpack_from("!H", p.value)
    power = mode = tari = session = population = search = None
    for q in p.children(2):
        if q.param_type == P_RF_TRANSMITTER:
            _hop, _chan, power = struct.unpack_from("!HHH", q.value)
        elif q.param_type == P_C1G2_INVENTORY_COMMAND:
            for r in q.children(1):
                if r.param_type == P_C1G2_RF_CONTROL:
                    mode, tari = struct.unpack_from("!HH", r.value)
                elif r.param_type == P_C1G2_SINGULATION_CONTROL:
                    flags, population, _transit = struct.unpack_from("!BHI", r.value)
                    session = flags >> 6
                elif r.param_type == P_CUSTOM and r.value[:8] == _IMPINJ_SEARCH_MODE:
                    (search,) = struct.unpack_from("!H", r.value, 8)
    return AntennaSettings(antenna, power, mode, tari, session, population, search)
