"""Configuration: one TOML file, one frozen pydantic tree, unknown keys rejected, units in names."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.domain.gs1_rules import BUILTIN_RULES, RuleTable, parse_syntax_dictionary
from gateway.errors import ConfigError, ParseError
from gateway.sync.settings import ForwarderSettings, LinkSettings, TlsSettings


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Model):
    """Who this gateway is and where it keeps state."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
    site: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
    state_dir: Path = Path("/var/lib/dock-gateway")


class TlsSection(_Model):
    """TLS to the broker: CA verification is on whenever this section is there."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pair(self) -> TlsSection:
        if (self.cert_file is None) != (self.key_file is None):
            msg = "cert_file and key_file go together"
            raise ValueError(msg)
        return self


class MqttSection(_Model):
    """The broker link; the password comes from the environment variable `password_env` names."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    # The nodes of a broker cluster, tried in turn; when set, `host` and `port` are not used.
    servers: list[str] = Field(default_factory=list)
    protocol: Literal["5", "3.1.1"] = "5"
    topic_prefix: Annotated[str, Field(pattern=r"^[^#+/][^#+]*[^#+/]$|^[^#+/]$")] = "returns"
    client_id: str | None = None
    username: str | None = None
    password_env: str | None = None
    tls: TlsSection | None = None
    keepalive_s: Annotated[int, Field(ge=2, le=3600)] = 30
    delivery: Literal["broker", "wms"] = "broker"
    format: Literal["json", "epcis"] = "json"
    ack_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 100
    # MQTT 5: incoming QoS 1 messages the broker may send before the gateway acknowledges them.
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 32
    stall_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    reconnect_min_s: Annotated[float, Field(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0)] = 30.0
    kpi_interval_s: Annotated[float, Field(gt=0)] = 60.0
    status_interval_s: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        for index, entry in enumerate(value):
            try:
                parse_server(entry)
            except ValueError as exc:
                msg = f"entry {index}: {exc}"
                raise ValueError(msg) from exc
        if len(set(value)) != len(value):
            msg = "the same server is listed twice"
            raise ValueError(msg)
        return value

    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """The brokers to try in turn: `servers` when set, else `host` and `port`."""
        if not self.servers:
            return ((self.host, self.port),)
        return tuple(parse_server(entry) for entry in self.servers)

    def password(self) -> str | None:
        """The broker password from the environment, or None; never logged."""
        if self.password_env is None:
            return None
        return os.environ.get(self.password_env)

    def forwarder_settings(self, client_id: str) -> ForwarderSettings:
        """Plain settings for `gateway.sync` (the password is read from the environment now)."""
        tls = None
        if self.tls is not None:
            tls = TlsSettings(
                ca_file=self.tls.ca_file,
                cert_file=self.tls.cert_file,
                key_file=self.tls.key_file,
                insecure_skip_verify=self.tls.insecure_skip_verify,
            )
        host, port = self.endpoints()[0]
        link = LinkSettings(
            host=host,
            port=port,
            client_id=client_id,
            keepalive_s=self.keepalive_s,
            username=self.username,
            password=self.password(),
            tls=tls,
            connect_timeout_s=max(5.0, float(self.keepalive_s)),
            protocol=self.protocol,
            receive_maximum=self.receive_maximum,
        )
        return ForwarderSettings(
            link=link,
            servers=self.endpoints(),
            delivery=self.delivery,
            max_inflight=self.max_inflight,
            ack_timeout_s=self.ack_timeout_s,
            stall_timeout_s=self.stall_timeout_s,
            reconnect_min_s=self.reconnect_min_s,
            reconnect_max_s=self.reconnect_max_s,
            status_interval_s=self.status_interval_s,
        )


def parse_server(entry: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:1883`) as a pair; raise ValueError naming what is wrong."""
    host, sep, port = entry.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or any(c.isspace() or c in "[]/" for c in host):
        msg = f"{entry!r} is not host:port"
        raise ValueError(msg)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        msg = f"{entry!r}: the port must be 1 to 65535"
        raise ValueError(msg)
    return host, int(port)


class BufferSection(_Model):
    """The SQLite buffer: a byte budget, journal batching and retention of delivered movements."""

    max_bytes: Annotated[int, Field(ge=64 * 1024)] = 2 * 1024**3
    journal_batch_ms: Annotated[float, Field(gt=0, le=1000)] = 5.0
    journal_batch_max: Annotated[int, Field(ge=1)] = 2000
    delivered_retention_s: Annotated[float, Field(ge=0)] = 7 * 24 * 3600.0
    synchronous: Literal["FULL", "NORMAL"] = "FULL"


class PatternsSection(_Model):
    """Regular expressions that recognise non-GS1 codes a returns dock uses."""

    rma: str = r"^RMA-[0-9A-Z]+$"
    rma_close: str = r"^RMA-CLOSE$"
    location: str = r"^LOC-[0-9A-Z-]+$"
    disposition: str = r"^DISP-(RESTOCK|REPAIR|RECYCLE|DISPOSE|DONATE)$"
    gs1_dictionary: Path | None = None


class LightsSection(_Model):
    """A stack light on an LLRP reader's GPOs: one port per verdict, lit for `hold_s`."""

    reader: str
    expected: Annotated[int, Field(ge=1)]
    unexpected: Annotated[int, Field(ge=1)]
    problem: Annotated[int, Field(ge=1)]
    hold_s: Annotated[float, Field(gt=0)] = 4.0

    @model_validator(mode="after")
    def _distinct_ports(self) -> LightsSection:
        if len({self.expected, self.unexpected, self.problem}) < 3:
            msg = "expected, unexpected and problem need three different GPO ports"
            raise ValueError(msg)
        return self

    def ports(self) -> dict[str, int]:
        """Verdict to GPO port."""
        return {"expected": self.expected, "unexpected": self.unexpected, "problem": self.problem}


class TriggerSection(_Model):
    """Inventory while GPI `gpi` is high, and `linger_s` after it falls."""

    gpi: Annotated[int, Field(ge=1)]
    linger_s: Annotated[float, Field(ge=0)] = 5.0
    start: Literal["rospec", "gateway"] = "rospec"  # the ROSpec's GPI trigger, or START_ROSPEC


class StationSection(_Model):
    """A place in the returns flow; its kind picks the rules that make movements."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    kind: Literal["receiving", "inspection", "restock", "disposal"]
    rssi_floor_dbm: float = -80.0
    absent_s: Annotated[float, Field(gt=0)] = 3.0
    stray_dwell_s: Annotated[float, Field(ge=0)] = 20.0
    rescan_window_s: Annotated[float, Field(ge=0)] = 5.0
    rma_timeout_s: Annotated[float, Field(gt=0)] = 900.0
    location_uri: str | None = None
    min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.6
    reversal_hold_s: Annotated[float, Field(ge=0)] = 0.0
    stray_rssi_dbm: float = -72.0
    leak_margin_db: Annotated[float, Field(ge=0)] = 12.0
    lights: LightsSection | None = None


class _ReaderBase(_Model):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    station: str


class ReplayReader(_ReaderBase):
    """Replays raw events from a JSONL file (the format `gateway buffer export --raw` writes)."""

    kind: Literal["replay"]
    file: Path
    rate_per_s: Annotated[float, Field(gt=0)] = 1000.0


class LlrpReader(_ReaderBase):
    """A fixed LLRP reader (Impinj, Zebra, ...) driven through sllurp."""

    kind: Literal["llrp"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 5084
    profile: str = "generic-llrp-portal"
    zones: dict[str, list[int]] = Field(default_factory=dict)
    clock_drift_max_s: Annotated[float, Field(gt=0)] = 300.0
    trigger: TriggerSection | None = None


class TcpScanner(_ReaderBase):
    """A TCP listener for network scanners and handhelds, one scan per line."""

    kind: Literal["tcp-scanner"]
    listen: str = "127.0.0.1:51000"
    devices: dict[str, str] = Field(default_factory=dict)
    device_stations: dict[str, str] = Field(default_factory=dict)
    max_line_bytes: Annotated[int, Field(ge=16, le=65536)] = 4096
    idle_timeout_s: Annotated[float, Field(gt=0)] = 600.0

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            msg = "listen must be host:port"
            raise ValueError(msg)
        return value


class SerialScanner(_ReaderBase):
    """A serial scanner (USB CDC-ACM, RS-232, Bluetooth SPP) by path or pyserial URL."""

    kind: Literal["serial-scanner"]
    url: str
    baud: Annotated[int, Field(gt=0)] = 9600
    suffix: Literal["CR", "LF", "CRLF", "none"] = "CR"
    inter_char_timeout_s: Annotated[float, Field(gt=0)] = 0.1
    max_scan_bytes: Annotated[int, Field(ge=16, le=65536)] = 4096


class HidScanner(_ReaderBase):
    """A keyboard-wedge scanner through evdev, grabbed so keystrokes do not reach a console."""

    kind: Literal["hid-scanner"]
    device: str
    gs_key: str = "KEY_F8"
    grab: bool = True
    max_scan_bytes: Annotated[int, Field(ge=16, le=65536)] = 4096

    @field_validator("gs_key")
    @classmethod
    def _gs_key(cls, value: str) -> str:
        from gateway.readers.hid.keymap import KEY_CODES  # noqa: PLC0415 - a pure table

        unusable = {"KEY_ENTER", "KEY_KPENTER", "KEY_LEFTSHIFT", "KEY_RIGHTSHIFT"}
        if value not in KEY_CODES or value in unusable:
            msg = f"unknown or unusable key {value!r}"
            raise ValueError(msg)
        return value


class MqttScanner(_Model):
    """Handhelds that publish each scan to `{prefix}/{site}/{gateway}/scans/{device}` (QoS 1)."""

    kind: Literal["mqtt-scanner"]
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    # Devices not in `device_stations` scan for this station; with none, they are refused.
    station: str | None = None
    device_stations: dict[str, str] = Field(default_factory=dict)
    max_scan_chars: Annotated[int, Field(ge=16, le=65536)] = 4096


ReaderSection = Annotated[
    ReplayReader | LlrpReader | TcpScanner | SerialScanner | HidScanner | MqttScanner,
    Field(discriminator="kind"),
]


class KpiSection(_Model):
    """Edge KPIs: cost and footprint factors per disposition, optionally per GTIN prefix."""

    factors: dict[str, dict[str, float]] = Field(default_factory=dict)
    gtin_prefixes: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)


class EpcisSection(_Model):
    """EPCIS output: the base for private URIs (stations without an SGLN, RMAs, plain codes)."""

    uri_base: str = "https://id.dock-gateway.example/"


class SecuritySection(_Model):
    """Command security: when `command_key_env` is set, commands must carry a valid signature."""

    command_key_env: str | None = None
    command_window_s: Annotated[float, Field(gt=0, le=86400)] = 300.0

    def command_key(self) -> bytes | None:
        """The HMAC key from the environment, or None when commands need no signature."""
        if self.command_key_env is None:
            return None
        value = os.environ.get(self.command_key_env)
        return value.encode() if value else None


class ProfilesSection(_Model):
    """Where reader profiles live and how a change is watched for a read-rate drop."""

    dir: Path | None = None
    rollback_drop_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    rollback_watch_s: Annotated[float, Field(gt=0)] = 30.0


class HealthSection(_Model):
    """The local health and metrics HTTP endpoint."""

    enabled: bool = True
    listen: str = "127.0.0.1:9108"
    broker_down_max_s: Annotated[float, Field(gt=0)] = 120.0
    reader_down_max_s: Annotated[float, Field(gt=0)] = 120.0
    buffer_full_share: Annotated[float, Field(gt=0, le=1)] = 0.9


class ConsoleSection(_Model):
    """The technicians' console on the health port; a non-loopback listen needs a password."""

    password_env: str | None = None
    update_interval_s: Annotated[float, Field(ge=0.1, le=10)] = 0.5
    tags_in_view_max: Annotated[int, Field(ge=10, le=100_000)] = 5000
    tag_expire_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # The tuning page calls a tag parked once it has been in view this long without crossing.
    parked_after_s: Annotated[float, Field(ge=1, le=86_400)] = 120.0
    # More names (or addresses) the console is reached by, e.g. a DNS alias or a NAT address;
    # requests naming any other Host are refused (DNS rebinding).
    hosts: list[
        Annotated[
            str, Field(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.:-]*)$", max_length=253)
        ]
    ] = Field(default_factory=list)
    # HTTPS for the console, /healthz and /metrics (one server): both PEM files, or neither.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> ConsoleSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            msg = "tls_cert and tls_key go together"
            raise ValueError(msg)
        return self

    def password(self) -> str | None:
        """The technicians' password from the environment, or None; never logged."""
        if self.password_env is None:
            return None
        return os.environ.get(self.password_env) or None


class Config(_Model):
    """The whole configuration file."""

    gateway: GatewaySection
    mqtt: MqttSection = MqttSection()
    buffer: BufferSection = BufferSection()
    patterns: PatternsSection = PatternsSection()
    health: HealthSection = HealthSection()
    console: ConsoleSection = ConsoleSection()
    kpi: KpiSection = KpiSection()
    epcis: EpcisSection = EpcisSection()
    security: SecuritySection = SecuritySection()
    profiles: ProfilesSection = ProfilesSection()
    stations: list[StationSection] = Field(default_factory=list)
    readers: list[ReaderSection] = Field(default_factory=list)

    @field_validator("stations")
    @classmethod
    def _unique_stations(cls, stations: list[StationSection]) -> list[StationSection]:
        seen: set[str] = set()
        for station in stations:
            if station.id in seen:
                msg = f"duplicate station id {station.id!r}"
                raise ValueError(msg)
            seen.add(station.id)
        return stations

    @model_validator(mode="after")
    def _readers_point_at_stations(self) -> Config:
        stations = {s.id for s in self.stations}
        seen: set[str] = set()
        mqtt_scanners = 0
        for index, reader in enumerate(self.readers):
            if reader.id in seen:
                msg = f"readers.{index}.id: duplicate reader id {reader.id!r}"
                raise ValueError(msg)
            seen.add(reader.id)
            if reader.station is not None and reader.station not in stations:
                msg = f"readers.{index}.station: no station {reader.station!r} in [[stations]]"
                raise ValueError(msg)
            if isinstance(reader, MqttScanner):
                mqtt_scanners += 1
                if mqtt_scanners > 1:
                    msg = f"readers.{index}.kind: one mqtt-scanner reader takes every scans/ topic"
                    raise ValueError(msg)
            if isinstance(reader, TcpScanner | MqttScanner):
                for device, station in reader.device_stations.items():
                    if station not in stations:
                        msg = (
                            f"readers.{index}.device_stations.{device}: "
                            f"no station {station!r} in [[stations]]"
                        )
                        raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _lights_on_llrp_readers(self) -> Config:
        readers = {r.id: r for r in self.readers}
        driven: dict[tuple[str, int], str] = {}
        for index, station in enumerate(self.stations):
            lights = station.lights
            if lights is None:
                continue
            reader = readers.get(lights.reader)
            if reader is None:
                msg = f"stations.{index}.lights.reader: no reader {lights.reader!r} in [[readers]]"
                raise ValueError(msg)
            if not isinstance(reader, LlrpReader):
                msg = (
                    f"stations.{index}.lights.reader: {lights.reader!r} is a {reader.kind} "
                    "reader; lights need an LLRP reader's GPOs"
                )
                raise ValueError(msg)  # noqa: TRY004 - pydantic reports only ValueError
            for verdict, port in lights.ports().items():
                other = driven.setdefault((reader.id, port), station.id)
                if other != station.id:
                    msg = (
                        f"stations.{index}.lights.{verdict}: GPO {port} of {reader.id!r} "
                        f"is driven by station {other!r} already"
                    )
                    raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _remote_console_needs_password(self) -> Config:
        if (
            self.health.enabled
            and self.console.password_env is None
            and not is_loopback_listen(self.health.listen)
        ):
            msg = (
                f"console.password_env: health.listen {self.health.listen!r} is not loopback: "
                "name the environment variable with the technicians' password"
            )
            raise ValueError(msg)
        return self

    def station(self, station_id: str) -> StationSection:
        """The station with this id (validated to exist for every reader)."""
        for station in self.stations:
            if station.id == station_id:
                return station
        raise KeyError(station_id)


def load_config(path: Path) -> Config:
    """Read and validate a config file; relative paths resolve against the file's folder."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(str(path), "not valid TOML: nested too deeply") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read: {exc}") from exc
    return parse_config(raw, base_dir=path.resolve().parent)


def parse_config(raw: dict[str, Any], base_dir: Path | None = None) -> Config:
    """Validate a config mapping; raise ConfigError naming the first bad key."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc) from exc
    if base_dir is None:
        return config
    return _resolve_paths(config, base_dir)


def load_gs1_rules(dictionary: Path | None) -> RuleTable:
    """The GS1 rules: the site's syntax dictionary file (`patterns.gs1_dictionary`) or built in."""
    if dictionary is None:
        return BUILTIN_RULES
    try:
        text = dictionary.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParseError("syntax dictionary", f"{dictionary}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ParseError("syntax dictionary", f"{dictionary}: not UTF-8 text") from exc
    return parse_syntax_dictionary(text)


def is_loopback_listen(listen: str) -> bool:
    """Whether a `host:port` listen binds to loopback only (127.0.0.0/8, ::1, localhost)."""
    host = listen.rpartition(":")[0].strip("[]") or "127.0.0.1"
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve anywhere: treat it as reachable from outside


def _config_error(exc: ValidationError) -> ConfigError:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"] if not _is_union_tag(part))
    if error["type"] == "extra_forbidden":
        return ConfigError(key, "unknown key")
    if error["type"] == "missing":
        return ConfigError(key, "missing required key")
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
        prefixes = ("readers.", "console.", "stations.")
        if ": " in message and message.split(": ", 1)[0].startswith(prefixes):
            key, message = message.split(": ", 1)
    return ConfigError(key or "(top level)", message)


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and part in {
        "replay",
        "llrp",
        "tcp-scanner",
        "serial-scanner",
        "hid-scanner",
        "mqtt-scanner",
    }


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    def resolve(path: Path) -> Path:
        return path if path.is_absolute() else base_dir / path

    readers = [
        reader.model_copy(update={"file": resolve(reader.file)})
        if isinstance(reader, ReplayReader)
        else reader
        for reader in config.readers
    ]
    gateway = config.gateway.model_copy(update={"state_dir": resolve(config.gateway.state_dir)})
    patterns = config.patterns
    if patterns.gs1_dictionary is not None:
        patterns = patterns.model_copy(update={"gs1_dictionary": resolve(patterns.gs1_dictionary)})
    profiles = config.profiles
    if profiles.dir is not None:
        profiles = profiles.model_copy(update={"dir": resolve(profiles.dir)})
    console = config.console
    if console.tls_cert is not None and console.tls_key is not None:
        console = console.model_copy(
            update={"tls_cert": resolve(console.tls_cert), "tls_key": resolve(console.tls_key)}
        )
    return config.model_copy(
        update={
            "readers": readers,
            "gateway": gateway,
            "profiles": profiles,
            "patterns": patterns,
            "console": console,
        }
    )
