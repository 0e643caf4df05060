"""Reader profiles: the TOML files technicians edit, checked against each reader model's limits."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.config import Config, LlrpReader
from gateway.errors import ConfigError
from gateway.readers.llrp.settings import LlrpSettings

ModelFamily = Literal["impinj-r700", "impinj-speedway", "zebra-fx9600", "generic-llrp"]
SearchMode = Literal["reader-selected", "single-target", "dual-target", "single-target-suppressed"]

DEFAULT_PROFILE_DIR = Path(__file__).resolve().parent.parent / "firmware_profiles"


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """What a reader model family accepts (from the vendors' datasheets and LLRP capabilities)."""

    antennas: int
    power_min_dbm: float
    power_max_dbm: float
    power_step_dbm: float
    modes: tuple[int, ...] | None  # None: any mode index the reader's capabilities list
    sessions: tuple[int, ...] = (0, 1, 2, 3)
    search_modes: tuple[str, ...] = (
        "reader-selected",
        "single-target",
        "dual-target",
        "single-target-suppressed",
    )


MODEL_LIMITS: dict[str, ModelLimits] = {
    # Impinj R700: 4 ports, 10-33 dBm in 0.25 dB steps; RF modes incl. AutoSet 1000-1005 and 4000s.
    "impinj-r700": ModelLimits(
        antennas=4,
        power_min_dbm=10.0,
        power_max_dbm=33.0,
        power_step_dbm=0.25,
        modes=(0, 1, 2, 3, 4, 1000, 1002, 1003, 1004, 1005, 4002, 4003, 4004),
    ),
    # Impinj Speedway R420: 4 ports, 10-32.5 dBm in 0.25 dB steps.
    "impinj-speedway": ModelLimits(
        antennas=4,
        power_min_dbm=10.0,
        power_max_dbm=32.5,
        power_step_dbm=0.25,
        modes=(0, 1, 2, 3, 4, 1000, 1002, 1003, 1004, 1005),
    ),
    # Zebra FX9600: 8 ports (4-port variant too), 0-31.5 dBm in 0.1 dB steps; modes by index.
    "zebra-fx9600": ModelLimits(
        antennas=8,
        power_min_dbm=0.0,
        power_max_dbm=31.5,
        power_step_dbm=0.1,
        modes=tuple(range(32)),
        search_modes=("reader-selected", "single-target", "dual-target"),
    ),
    # Anything else that speaks LLRP: checked against its own capabilities at connect.
    "generic-llrp": ModelLimits(
        antennas=32,
        power_min_dbm=0.0,
        power_max_dbm=33.0,
        power_step_dbm=0.01,
        modes=None,
    ),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AntennaProfile(_Strict):
    """One antenna port and its transmit power."""

    port: Annotated[int, Field(ge=1, le=32)]
    power_dbm: float
    enabled: bool = True


class ReaderSettings(_Strict):
    """Air-protocol settings: mode, session, population, search mode, reporting, keepalive."""

    reader_mode: Annotated[int, Field(ge=0, le=65535)] = 1002
    session: Annotated[int, Field(ge=0, le=3)] = 2
    tag_population: Annotated[int, Field(ge=1, le=65535)] = 32
    search_mode: SearchMode = "dual-target"
    report_every_n_tags: Annotated[int, Field(ge=1, le=65535)] = 64
    report_timeout_ms: Annotated[int, Field(ge=10, le=60_000)] = 200
    keepalive_s: Annotated[float, Field(ge=1, le=300)] = 10.0
    rssi_floor_dbm: Annotated[float, Field(ge=-120, le=0)] = -80.0


class Filters(_Strict):
    """Which tags count: EPC hex prefixes to keep (empty keeps all)."""

    epc_prefixes: list[Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{1,64}$")]] = Field(
        default_factory=list
    )


class Profile(_Strict):
    """A reader profile as technicians write it (one TOML file)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)]
    model: ModelFamily
    version: Annotated[int, Field(ge=1)] = 1
    description: str = ""
    reader: ReaderSettings = ReaderSettings()
    antennas: list[AntennaProfile] = Field(min_length=1, max_length=32)
    filters: Filters = Filters()


def model_limit_problems(profile: Profile) -> list[tuple[str, str]]:
    """Every way the profile exceeds its model family's limits, as (field, reason)."""
    limits = MODEL_LIMITS[profile.model]
    problems: list[tuple[str, str]] = []
    seen: set[int] = set()
    for index, antenna in enumerate(profile.antennas):
        if antenna.port > limits.antennas:
            problems.append(
                (
                    f"antennas.{index}.port",
                    f"port {antenna.port} but {profile.model} has {limits.antennas} antenna ports",
                )
            )
        if antenna.port in seen:
            problems.append((f"antennas.{index}.port", f"port {antenna.port} listed twice"))
        seen.add(antenna.port)
        power = antenna.power_dbm
        if not limits.power_min_dbm <= power <= limits.power_max_dbm:
            problems.append(
                (
                    f"antennas.{index}.power_dbm",
                    (
                        f"{power} dBm outside {profile.model}'s {limits.power_min_dbm}-"
                        f"{limits.power_max_dbm} dBm"
                    ),
                )
            )
        elif not _on_step(power - limits.power_min_dbm, limits.power_step_dbm):
            problems.append(
                (
                    f"antennas.{index}.power_dbm",
                    (
                        f"{power} dBm is not a multiple of {profile.model}'s "
                        f"{limits.power_step_dbm} dB step"
                    ),
                )
            )
    settings = profile.reader
    if limits.modes is not None and settings.reader_mode not in limits.modes:
        problems.append(
            (
                "reader.reader_mode",
                (
                    f"mode {settings.reader_mode} is not one of {profile.model}'s modes "
                    f"{list(limits.modes)}"
                ),
            )
        )
    if settings.session not in limits.sessions:
        problems.append(("reader.session", f"session {settings.session} not supported"))
    if settings.search_mode not in limits.search_modes:
        problems.append(
            (
                "reader.search_mode",
                (
                    f"{settings.search_mode!r} not supported by {profile.model} "
                    f"(allowed: {', '.join(limits.search_modes)})"
                ),
            )
        )
    return problems


def parse_profile(raw: dict[str, Any], source: str = "profile") -> Profile:
    """Validate a profile mapping and its model's limits; ConfigError names the field and range."""
    profile = _schema_checked(raw, source)
    problems = model_limit_problems(profile)
    if problems:
        key, reason = problems[0]
        raise ConfigError(f"{source}: {key}", reason)
    return profile


def load_profile(path: Path) -> Profile:
    """Read and validate one profile file."""
    return parse_profile(_read(path), source=str(path))


def find_profile(name: str, directory: Path = DEFAULT_PROFILE_DIR) -> Profile:
    """The profile called `name` in the profile folder."""
    return load_profile(directory / f"{name}.toml")


def resolve_profile(name_or_path: str, directory: Path = DEFAULT_PROFILE_DIR) -> Profile:
    """A profile by file path (ends in .toml or exists), else by name in `directory`."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return load_profile(path)
    return find_profile(name_or_path, directory)


def validate_paths(paths: list[Path]) -> list[str]:
    """One line per problem in these files or folders (empty when every profile is valid)."""
    errors: list[str] = []
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.toml")) if path.is_dir() else [path])
    if not files:
        errors.append("no profile files found")
    for file in files:
        try:
            profile = _schema_checked(_read(file), str(file))
        except ConfigError as exc:
            errors.append(f"{exc.key}: {exc.reason}")
            continue
        errors.extend(f"{file}: {key}: {reason}" for key, reason in model_limit_problems(profile))
    return errors


def diff_profiles(old: Profile, new: Profile) -> list[tuple[str, Any, Any]]:
    """Field-by-field differences as (dotted path, old value, new value)."""
    return _diff("", old.model_dump(mode="json"), new.model_dump(mode="json"))


def profile_schema() -> dict[str, Any]:
    """The JSON Schema of a profile file, for technicians' editors."""
    schema = Profile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dock-gateway reader profile"
    return schema


def load_reader_profiles(config: Config) -> dict[str, Profile]:
    """The profile of every LLRP reader, validated; ConfigError names the reader and the field."""
    directory = config.profiles.dir or DEFAULT_PROFILE_DIR
    profiles: dict[str, Profile] = {}
    for index, reader in enumerate(config.readers):
        if not isinstance(reader, LlrpReader):
            continue
        path = directory / f"{reader.profile}.toml"
        if not path.exists():
            raise ConfigError(
                f"readers.{index}.profile", f"no profile {reader.profile!r} in {directory}"
            )
        profiles[reader.id] = load_profile(path)
    return profiles


def llrp_settings(profile: Profile, reader: LlrpReader) -> LlrpSettings:
    """What the LLRP driver sends, from a technician's profile."""
    antennas = tuple(a.port for a in profile.antennas if a.enabled)
    impinj = profile.model.startswith("impinj")
    return LlrpSettings(
        antennas=antennas,
        power_dbm_by_antenna=tuple((a.port, a.power_dbm) for a in profile.antennas if a.enabled),
        mode_identifier=profile.reader.reader_mode,
        session=profile.reader.session,
        tag_population=profile.reader.tag_population,
        search_mode=_SEARCH_MODES[profile.reader.search_mode] if impinj else None,
        report_every_n_tags=profile.reader.report_every_n_tags,
        keepalive_s=profile.reader.keepalive_s,
        max_clock_skew_s=reader.clock_drift_max_s,
        tag_filter_masks=tuple(profile.filters.epc_prefixes),
        trigger_gpi=reader.trigger.gpi if reader.trigger else None,
        trigger_linger_s=reader.trigger.linger_s if reader.trigger else 0.0,
        trigger_by_gateway=reader.trigger is not None and reader.trigger.start == "gateway",
    )


_SEARCH_MODES = {
    "reader-selected": 0,
    "single-target": 1,
    "dual-target": 2,
    "single-target-suppressed": 3,
}


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "profile file not found") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(str(path), "not valid TOML: nested too deeply") from exc
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    if raw.get("name") not in (None, path.stem):
        raise ConfigError(
            f"{path}: name", f"{raw.get('name')!r} must match the file name {path.stem!r}"
        )
    return raw


def _schema_checked(raw: dict[str, Any], source: str) -> Profile:
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "missing required key"
        raise ConfigError(f"{source}: {key}" if key else source, message) from exc


def _on_step(value: float, step: float) -> bool:
    units = value / step
    return abs(units - round(units)) < 1e-6


def _diff(prefix: str, old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(old.keys() | new.keys()):
            out += _diff(f"{prefix}.{key}" if prefix else key, old.get(key), new.get(key))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            out += _diff(f"{prefix}.{index}", a, b)
        return out
    return [] if old == new else [(prefix, old, new)]
