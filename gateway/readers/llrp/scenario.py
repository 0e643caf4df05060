"""Simulator scenarios: tags passing antennas over time, and faults; a loader and a generator."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.errors import ConfigError

FaultKind = Literal["drop", "silent", "corrupt", "replay"]
_FAULT_KINDS = ("drop", "silent", "corrupt", "replay")


@dataclass(frozen=True, slots=True)
class Pass:
    """A tag in view of `antennas` from `start_s` to `end_s` (scenario time), read at a rate."""

    start_s: float
    end_s: float
    antennas: tuple[int, ...]
    rssi_dbm: float = -55.0
    reads_per_s: float = 10.0

    def reads_between(self, t0_s: float, t1_s: float) -> int:
        """Reads per antenna in [t0_s, t1_s): deterministic, so intervals add up exactly."""
        lo = max(t0_s, self.start_s)
        hi = min(t1_s, self.end_s)
        if hi <= lo:
            return 0
        return math.floor((hi - self.start_s) * self.reads_per_s) - math.floor(
            (lo - self.start_s) * self.reads_per_s
        )


@dataclass(frozen=True, slots=True)
class ScenarioTag:
    """One tag (EPC bank, hex) and when it is in view of which antennas; `role` is for tests."""

    epc_hex: str
    passes: tuple[Pass, ...]
    role: str = "item"


@dataclass(frozen=True, slots=True)
class Fault:
    """Something going wrong at scenario time `at_s`; `path` names a replay file."""

    at_s: float
    kind: FaultKind
    path: str | None = None


@dataclass(frozen=True, slots=True)
class GpiChange:
    """A general-purpose input going high or low at scenario time `at_s` (a photo-eye's beam)."""

    at_s: float
    port: int
    high: bool


@dataclass(frozen=True, slots=True)
class Scenario:
    """What the simulated reader sees; scenario time runs from the start of inventory."""

    name: str
    duration_s: float
    tags: tuple[ScenarioTag, ...] = ()
    faults: tuple[Fault, ...] = ()
    zones: dict[str, tuple[int, ...]] = field(default_factory=dict)
    clock_unset: bool = False  # report timestamps from a reader clock that starts in 2000
    gpi: tuple[GpiChange, ...] = ()


def load_scenario(path: Path) -> Scenario:
    """Read a scenario from TOML or JSON; ConfigError names the bad key."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"not valid {path.suffix.lstrip('.')}: {exc}") from exc
    base = path.parent
    scenario = scenario_from_dict(raw)
    faults = tuple(
        Fault(f.at_s, f.kind, str((base / f.path).resolve()) if f.path else None)
        for f in scenario.faults
    )
    return Scenario(
        scenario.name,
        scenario.duration_s,
        scenario.tags,
        faults,
        scenario.zones,
        scenario.clock_unset,
        scenario.gpi,
    )


def scenario_from_dict(raw: dict[str, Any]) -> Scenario:
    """Build a scenario from parsed TOML/JSON; ConfigError names the bad key."""
    known = {"name", "duration_s", "tags", "faults", "zones", "clock_unset", "generate", "gpi"}
    for key in raw:
        if key not in known:
            raise ConfigError(key, "unknown key")
    if "generate" in raw:
        return _generated(raw)
    try:
        tags = tuple(_tag(t, f"tags[{i}]") for i, t in enumerate(raw.get("tags", [])))
        faults = tuple(_fault(f, f"faults[{i}]") for i, f in enumerate(raw.get("faults", [])))
        zones = {str(k): tuple(int(a) for a in v) for k, v in raw.get("zones", {}).items()}
        return Scenario(
            str(raw.get("name", "scenario")),
            float(raw["duration_s"]),
            tags,
            faults,
            zones,
            bool(raw.get("clock_unset", False)),
            tuple(_gpi(g, f"gpi[{i}]") for i, g in enumerate(raw.get("gpi", []))),
        )
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]), "missing") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError("scenario", str(exc)) from exc


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """The JSON/TOML shape of a scenario (inverse of `scenario_from_dict`)."""
    return {
        "name": scenario.name,
        "duration_s": scenario.duration_s,
        "clock_unset": scenario.clock_unset,
        "zones": {k: list(v) for k, v in scenario.zones.items()},
        "tags": [
            {
                "epc": t.epc_hex,
                "role": t.role,
                "passes": [
                    {
                        "start_s": p.start_s,
                        "end_s": p.end_s,
                        "antennas": list(p.antennas),
                        "rssi_dbm": p.rssi_dbm,
                        "reads_per_s": p.reads_per_s,
                    }
                    for p in t.passes
                ],
            }
            for t in scenario.tags
        ],
        "faults": [
            {"at_s": f.at_s, "kind": f.kind} | ({"path": f.path} if f.path else {})
            for f in scenario.faults
        ],
        "gpi": [{"at_s": g.at_s, "port": g.port, "high": g.high} for g in scenario.gpi],
    }


def sgtin96_hex(
    company_prefix: str, item_reference: str, serial: int, filter_value: int = 1
) -> str:
    """SGTIN-96 EPC (uppercase hex) for a GS1 company prefix and item reference (with indicator)."""
    partitions = {
        12: (0, 40, 4),
        11: (1, 37, 7),
        10: (2, 34, 10),
        9: (3, 30, 14),
        8: (4, 27, 17),
        7: (5, 24, 20),
        6: (6, 20, 24),
    }
    if len(company_prefix) + len(item_reference) != 13:
        raise ValueError("company prefix + item reference must be 13 digits")
    partition, cp_bits, ir_bits = partitions[len(company_prefix)]
    if not 0 <= serial < 1 << 38:
        raise ValueError("serial must fit 38 bits")
    value = 0x30
    for width, field_value in (
        (3, filter_value),
        (3, partition),
        (cp_bits, int(company_prefix)),
        (ir_bits, int(item_reference)),
        (38, serial),
    ):
        value = (value << width) | field_value
    return f"{value:024X}"


def returns_door_scenario(
    items: int = 500,
    pallets: int = 20,
    strays: int = 30,
    in_and_out: int = 10,
    *,
    seed: int = 1,
    duration_s: float = 120.0,
    outside: tuple[int, ...] = (1, 2),
    inside: tuple[int, ...] = (3, 4),
    reads_per_s: float = 8.0,
    faults: tuple[Fault, ...] = (),
    stray_antennas: tuple[int, ...] | None = None,
) -> Scenario:
    """A receiving door: pallets crossing inward, strays parked inside, items in and back out.

    Strays sit the whole time, weakly read, before `stray_antennas` (all inside ones by default).
    """
    rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
    prefixes = ["0614141", "4012345", "8712345", "5012345"]
    serials = iter(rng.sample(range(1, 1 << 38), items + strays + in_and_out))

    def epc() -> str:
        prefix = rng.choice(prefixes)
        item_ref = f"{rng.randrange(1, 10)}{rng.randrange(0, 10**5):05d}"
        return sgtin96_hex(prefix, item_ref, next(serials))

    tags: list[ScenarioTag] = []
    slot_s = (duration_s - 8.0) / max(1, pallets + in_and_out)
    per_pallet = [items // pallets + (1 if i < items % pallets else 0) for i in range(pallets)]
    slot = 0
    for count in per_pallet:
        t0 = 2.0 + slot * slot_s
        slot += 1
        for _ in range(count):
            jitter = rng.uniform(0.0, 0.4)
            tags.append(
                ScenarioTag(
                    epc(),
                    (
                        Pass(
                            t0 + jitter,
                            t0 + jitter + 1.5,
                            outside,
                            rng.uniform(-62, -45),
                            reads_per_s,
                        ),
                        Pass(
                            t0 + jitter + 1.3,
                            t0 + jitter + 2.8,
                            inside,
                            rng.uniform(-62, -45),
                            reads_per_s,
                        ),
                    ),
                    "pallet",
                )
            )
    for _ in range(in_and_out):
        t0 = 2.0 + slot * slot_s
        slot += 1
        tags.append(
            ScenarioTag(
                epc(),
                (
                    Pass(t0, t0 + 1.5, outside, -50.0, reads_per_s),
                    Pass(t0 + 1.3, t0 + 3.0, inside, -50.0, reads_per_s),
                    Pass(t0 + 2.8, t0 + 4.5, outside, -50.0, reads_per_s),
                ),
                "in-and-out",
            )
        )
    parked = inside if stray_antennas is None else stray_antennas
    tags.extend(
        ScenarioTag(epc(), (Pass(0.0, duration_s, parked, rng.uniform(-75, -66), 1.0),), "stray")
        for _ in range(strays)
    )
    return Scenario(
        "returns-door",
        duration_s,
        tuple(tags),
        faults,
        {"outside": outside, "inside": inside},
    )


def _generated(raw: dict[str, Any]) -> Scenario:
    gen = dict(raw["generate"])
    allowed = {"items", "pallets", "strays", "in_and_out", "seed", "reads_per_s"}
    for key in gen:
        if key not in allowed:
            raise ConfigError(f"generate.{key}", "unknown key")
    zones = raw.get("zones", {})
    try:
        faults = tuple(_fault(f, f"faults[{i}]") for i, f in enumerate(raw.get("faults", [])))
        gpi = tuple(_gpi(g, f"gpi[{i}]") for i, g in enumerate(raw.get("gpi", [])))
        door = returns_door_scenario(
            int(gen.get("items", 500)),
            int(gen.get("pallets", 20)),
            int(gen.get("strays", 30)),
            int(gen.get("in_and_out", 10)),
            seed=int(gen.get("seed", 1)),
            duration_s=float(raw.get("duration_s", 120.0)),
            outside=tuple(int(a) for a in zones.get("outside", (1, 2))),
            inside=tuple(int(a) for a in zones.get("inside", (3, 4))),
            reads_per_s=float(gen.get("reads_per_s", 8.0)),
            faults=faults,
        )
        return dataclasses.replace(door, gpi=gpi)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]), "missing") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError("generate", str(exc)) from exc


def _tag(raw: dict[str, Any], where: str) -> ScenarioTag:
    epc_hex = str(raw["epc"]).upper()
    if len(epc_hex) % 4 or not epc_hex or any(c not in "0123456789ABCDEF" for c in epc_hex):
        raise ConfigError(f"{where}.epc", "hex string of whole 16-bit words expected")
    passes = tuple(
        Pass(
            float(p["start_s"]),
            float(p["end_s"]),
            tuple(int(a) for a in p["antennas"]),
            float(p.get("rssi_dbm", -55.0)),
            float(p.get("reads_per_s", 10.0)),
        )
        for p in raw.get("passes", [])
    )
    return ScenarioTag(epc_hex, passes, str(raw.get("role", "item")))


def _fault(raw: dict[str, Any], where: str) -> Fault:
    kind = raw["kind"]
    if kind not in _FAULT_KINDS:
        raise ConfigError(f"{where}.kind", f"one of {', '.join(_FAULT_KINDS)} expected")
    path = raw.get("path")
    if kind == "replay" and not path:
        raise ConfigError(f"{where}.path", "replay needs a path")
    return Fault(float(raw["at_s"]), kind, str(path) if path else None)


def _gpi(raw: dict[str, Any], where: str) -> GpiChange:
    for key in raw:
        if key not in {"at_s", "port", "high"}:
            raise ConfigError(f"{where}.{key}", "unknown key")
    port = int(raw["port"])
    if port < 1:
        raise ConfigError(f"{where}.port", "GPI ports count from 1")
    high = raw["high"]
    if not isinstance(high, bool):
        raise ConfigError(f"{where}.high", "true or false expected")
    return GpiChange(float(raw["at_s"]), port, high)
