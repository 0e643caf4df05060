"""Fuzzing configuration and reader profiles: only ConfigError, and its key names a real path.

Inputs: arbitrary bytes in a file, structurally valid TOML with random keys and values (rendered by
a tiny writer below), and single mutations of a known-good config or profile.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from gateway import config as config_module
from gateway import profiles as profiles_module
from gateway.config import load_config, parse_config
from gateway.errors import ConfigError
from gateway.profiles import DEFAULT_PROFILE_DIR, load_profile, parse_profile

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

GOOD_CONFIG: dict[str, Any] = {
    "gateway": {"id": "dock-3", "site": "milan-returns", "state_dir": "state"},
    "mqtt": {
        "host": "127.0.0.1",
        "port": 1883,
        "delivery": "wms",
        "keepalive_s": 30,
        "tls": {"ca_file": "ca.pem"},
    },
    "buffer": {"max_bytes": 1 << 20, "synchronous": "FULL", "journal_batch_ms": 5.0},
    "patterns": {"rma": "^RMA-[0-9A-Z]+$"},
    "security": {"command_window_s": 300.0},
    "profiles": {"dir": "profiles", "rollback_drop_share": 0.5},
    "kpi": {"factors": {"restock": {"cost_eur": 1.5}}},
    "stations": [
        {"id": "door-3", "kind": "receiving", "absent_s": 3.0, "min_confidence": 0.6},
        {"id": "bench-1", "kind": "inspection"},
    ],
    "readers": [
        {
            "kind": "llrp",
            "id": "door-3-portal",
            "host": "127.0.0.1",
            "port": 5084,
            "station": "door-3",
            "zones": {"outside": [1, 2], "inside": [3, 4]},
        },
        {
            "kind": "tcp-scanner",
            "id": "door-3-handheld",
            "listen": "127.0.0.1:51000",
            "station": "door-3",
            "device_stations": {"hh-1": "bench-1"},
        },
        {
            "kind": "serial-scanner",
            "id": "bench-1",
            "url": "loop://",
            "station": "bench-1",
            "suffix": "CRLF",
        },
        {
            "kind": "hid-scanner",
            "id": "bench-hid",
            "device": "/dev/input/event3",
            "station": "bench-1",
        },
        {"kind": "replay", "id": "replay-1", "file": "raw.jsonl", "station": "door-3"},
    ],
}
GOOD_PROFILE: dict[str, Any] = tomllib.loads(
    (DEFAULT_PROFILE_DIR / "generic-llrp-portal.toml").read_text(encoding="utf-8")
)
T = TypeVar("T")
E = TypeVar("E", bound=BaseException)
# Free-form mappings: any key is allowed there, so an added key is not "unknown".
FREE_FORM = {"zones", "devices", "device_stations", "factors", "gtin_prefixes"}


def _attempt(call: Callable[[], T], error: type[E]) -> T | E:
    """What `call` returned, or the `error` it raised (a fuzz input may go either way)."""
    try:
        return call()
    except error as exc:
        return exc


def _field_names(module: object) -> set[str]:
    names: set[str] = set()
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, BaseModel) and value is not BaseModel:
            names.update(value.model_fields)
    return names


CONFIG_FIELDS = _field_names(config_module)
PROFILE_FIELDS = _field_names(profiles_module)


def _key_matches(node: object, parts: list[str], fields: set[str]) -> bool:
    """Match dotted parts against the input; a key may itself hold dots, so try every split."""
    if not parts:
        return True
    if isinstance(node, dict | list) and ".".join(parts) in fields:
        return True  # a schema field missing under a real path
    for cut in range(1, len(parts) + 1):
        head = ".".join(parts[:cut])
        child: object = None
        if isinstance(node, dict) and head in node:
            child = node[head]
        elif isinstance(node, list) and head.isdigit() and int(head) < len(node):
            child = node[int(head)]
        else:
            continue
        if _key_matches(child, parts[cut:], fields):
            return True
    return False


def _walk(raw: object, parts: list[str]) -> tuple[bool, object]:
    node = raw
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _key_is_real(key: str, raw: object, fields: set[str]) -> bool:
    """The key is a dotted path into the input, or names a schema field under a path of it."""
    return _key_matches(raw, key.split("."), fields)


def _check_config_error(exc: ConfigError, raw: object) -> None:
    assert exc.reason
    assert _key_is_real(exc.key, raw, CONFIG_FIELDS), f"key {exc.key!r} names no real path"


def _check_profile_error(exc: ConfigError, raw: object, source: str) -> None:
    assert exc.reason
    assert exc.key == source or exc.key.startswith(f"{source}: "), exc.key
    key = exc.key.removeprefix(f"{source}: ")
    if key != source:
        assert _key_is_real(key, raw, PROFILE_FIELDS), f"key {key!r} names no real path"


# -- a tiny TOML writer (inline tables and arrays; enough for fuzzing) ---------------------------


def toml_value(value: object) -> str:  # noqa: PLR0911 - one return per TOML type
    """`value` as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are TOML's (raw non-ASCII: no surrogate pairs), but TOML also wants DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(table: dict[str, Any]) -> str:
    """A TOML document whose top-level table is `table`."""
    return "".join(f"{toml_value(key)} = {toml_value(value)}\n" for key, value in table.items())


toml_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
toml_scalars = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | toml_text
    | st.sampled_from(["llrp", "tcp-scanner", "receiving", "FULL", "wms", "127.0.0.1:1", "1e9"])
)
key_names = st.sampled_from(sorted(CONFIG_FIELDS | {"kind"})) | toml_text
toml_tables = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(key_names, inner, max_size=4),
    max_leaves=16,
)
top_tables = st.dictionaries(key_names, toml_tables, max_size=6)


# -- config: arbitrary bytes, random TOML, mutations -----------------------------------------------


def _load(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "gateway.toml"
    path.write_bytes(data)
    result = _attempt(lambda: load_config(path), ConfigError)
    if isinstance(result, ConfigError):
        assert result.reason
        if result.key != str(path):
            # As the product reads it (read_text turns a bare CR into a newline).
            _check_config_error(result, tomllib.loads(path.read_text(encoding="utf-8")))


def test_good_config_and_writer_round_trip(tmp_path: Path) -> None:
    text = toml_document(GOOD_CONFIG)
    assert tomllib.loads(text) == GOOD_CONFIG
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    assert config.gateway.state_dir == tmp_path / "state"


@FUZZ
@given(data=st.binary(max_size=400))
@example(data=b"\xff\xfe")
@example(data=b"\r")
@example(data=b"[gateway]\nid = \x00")
def test_config_arbitrary_bytes_only_config_error(tmp_path: Path, data: bytes) -> None:
    _load(tmp_path, data)


@FUZZ
@given(table=top_tables)
@example(table={"gateway": {"id": "a", "site": "b"}, "readers": [{"kind": []}]})
@example(table={"gateway": {"id": "a", "site": "b"}, "mqtt": {"port": float("inf")}})
def test_config_random_toml_only_config_error(tmp_path: Path, table: dict[str, Any]) -> None:
    text = toml_document(table)
    assert tomllib.loads(text) == table  # the writer wrote what we meant
    _load(tmp_path, text.encode())


def _paths(node: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, str(index)))
    return out


def _set(root: Any, path: tuple[str, ...], value: object) -> None:
    parent = root
    for part in path[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    if isinstance(parent, list):
        parent[int(path[-1])] = value
    else:
        parent[path[-1]] = value


def _drop(root: Any, path: tuple[str, ...]) -> None:
    parent = root
    for part in path[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    if isinstance(parent, list):
        del parent[int(path[-1])]
    else:
        del parent[path[-1]]


wrong_values = (
    toml_scalars
    | st.sampled_from(
        [
            -1,
            0,
            65536,
            2**63 - 1,
            -1e300,
            1e300,
            float("nan"),
            float("inf"),
            "",
            "RECEIVING",
            "Full",
            "mqtt",
            [],
            {},
            [[]],
            {"x": 1},
        ]
    )
    | st.lists(toml_scalars, max_size=2)
)


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _mutated(base: dict[str, Any], data: st.DataObject) -> tuple[dict[str, Any], str, str]:
    raw = _copy(base)
    path = data.draw(st.sampled_from(_paths(raw)), label="path")
    operation = data.draw(st.sampled_from(["drop", "unknown", "replace"]), label="operation")
    _, node = _walk(raw, list(path))
    if operation == "drop":
        _drop(raw, path)
        return raw, operation, ".".join(path)
    if operation == "unknown" and isinstance(node, dict):
        name = data.draw(st.sampled_from(["colour", "power", "id_", "Kind"]) | toml_text)
        if name in node:
            return raw, "noop", ""
        node[name] = data.draw(toml_scalars, label="value")
        return raw, operation, ".".join((*path, name))
    _set(raw, path, data.draw(wrong_values, label="value"))
    return raw, "replace", ".".join(path)


@FUZZ
@given(data=st.data())
def test_config_mutations_only_config_error_naming_a_real_key(data: st.DataObject) -> None:
    raw, operation, where = _mutated(GOOD_CONFIG, data)
    free_form = bool(FREE_FORM & set(where.split(".")[:-1]))
    result = _attempt(lambda: parse_config(raw, base_dir=Path("/nonexistent/base")), ConfigError)
    if isinstance(result, ConfigError):
        _check_config_error(result, raw)
        if operation == "unknown" and not free_form:
            assert result.key == where
            assert result.reason == "unknown key"
        return
    assert operation != "unknown" or free_form, f"unknown key {where!r} was accepted"


@settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(depth=st.integers(2_000, 20_000), kind=st.sampled_from(["array", "table"]))
@example(depth=5_000, kind="array")
def test_config_deep_nesting_only_config_error(tmp_path: Path, depth: int, kind: str) -> None:
    if kind == "array":
        text = "a = " + "[" * depth + "]" * depth
    else:
        text = "a = " + "{b = " * depth + "1" + "}" * depth
    path = tmp_path / "deep.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError):  # a deep table is no valid config either
        load_config(path)


# -- reader profiles -------------------------------------------------------------------------------


def test_good_profiles_parse() -> None:
    for path in sorted(DEFAULT_PROFILE_DIR.glob("*.toml")):
        assert load_profile(path).name == path.stem


@FUZZ
@given(data=st.data())
def test_profile_mutations_only_config_error_naming_a_real_key(data: st.DataObject) -> None:
    raw, operation, where = _mutated(GOOD_PROFILE, data)
    result = _attempt(lambda: parse_profile(raw, source="fuzz"), ConfigError)
    if isinstance(result, ConfigError):
        _check_profile_error(result, raw, "fuzz")
        if operation == "unknown":
            assert result.key == f"fuzz: {where}"
        return
    assert operation != "unknown", f"unknown key {where!r} was accepted"


@FUZZ
@given(table=top_tables | st.dictionaries(st.sampled_from(sorted(PROFILE_FIELDS)), toml_tables))
def test_profile_random_tables_only_config_error(table: dict[str, Any]) -> None:
    profile = _attempt(lambda: parse_profile(table, source="fuzz"), ConfigError)
    if isinstance(profile, ConfigError):
        _check_profile_error(profile, table, "fuzz")
        return
    assert profile.antennas


@FUZZ
@given(data=st.binary(max_size=300) | top_tables.map(lambda t: toml_document(t).encode()))
@example(data=b"name = 'other-name'\n")
def test_profile_file_arbitrary_bytes_only_config_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz-profile.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        load_profile(path)  # nothing random is a complete valid profile
    assert caught.value.key.startswith(str(path))


def test_profile_path_that_is_a_folder_is_config_error(tmp_path: Path) -> None:
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(ConfigError):
        load_profile(folder)


@settings(
    max_examples=5,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(depth=st.integers(2_000, 20_000))
@example(depth=5_000)
def test_profile_deep_nesting_only_config_error(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * depth + "]" * depth, encoding="utf-8")
    with pytest.raises(ConfigError):
        load_profile(path)
