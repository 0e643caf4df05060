"""Reader profiles: shipped ones validate; broken ones each fail with their own message."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.profiles import (
    DEFAULT_PROFILE_DIR,
    diff_profiles,
    find_profile,
    load_profile,
    profile_schema,
    validate_paths,
)

GOOD = """
name = "{name}"
model = "impinj-r700"
[reader]
reader_mode = 1002
session = 2
[[antennas]]
port = 1
power_dbm = 30.0
[[antennas]]
port = 3
power_dbm = 28.5
"""


def test_every_shipped_profile_validates() -> None:
    files = sorted(DEFAULT_PROFILE_DIR.glob("*.toml"))
    assert len(files) >= 4
    assert validate_paths([DEFAULT_PROFILE_DIR]) == []
    models = {load_profile(f).model for f in files}
    assert {"generic-llrp", "impinj-r700", "zebra-fx9600", "impinj-speedway"} <= models


BROKEN = [
    (
        "power_dbm = 30.0",
        "power_dbm = 35.0",
        "antennas.0.power_dbm",
        "35.0 dBm outside impinj-r700's 10.0-33.0 dBm",
    ),
    (
        "power_dbm = 30.0",
        "power_dbm = 30.1",
        "antennas.0.power_dbm",
        "not a multiple of impinj-r700's 0.25 dB step",
    ),
    (
        "reader_mode = 1002",
        "reader_mode = 7",
        "reader.reader_mode",
        "mode 7 is not one of impinj-r700's modes",
    ),
    ("port = 3", "port = 9", "antennas.1.port", "port 9 but impinj-r700 has 4 antenna ports"),
    ("port = 3", "port = 1", "antennas.1.port", "port 1 listed twice"),
    ("session = 2", "session = 2\ncolour = 'red'", "reader.colour", "unknown key"),
    ("session = 2", "session = 'two'", "reader.session", "valid integer"),
    ("session = 2", "session = 5", "reader.session", "less than or equal to 3"),
    ('model = "impinj-r700"', 'model = "impinj-r9000"', "model", "'impinj-r700'"),
    ("session = 2", "session = 2\nsearch_mode = 'sideways'", "reader.search_mode", "'dual-target'"),
    (
        'model = "impinj-r700"',
        'model = "zebra-fx9600"\n[filters]\nepc_prefixes = ["XYZ"]',
        "filters.epc_prefixes.0",
        "pattern",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "key", "message"), BROKEN, ids=[b[2] + ":" + b[3][:20] for b in BROKEN]
)
def test_broken_profile_fails_with_its_own_message(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    text = GOOD.format(name="broken").replace(old, new, 1)
    assert text != GOOD.format(name="broken")
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert info.value.key.endswith(key), info.value.key
    assert message in info.value.reason
    lines = validate_paths([path])
    assert len(lines) >= 1
    assert any(key in line and message in line for line in lines), lines


def test_validate_lists_every_problem_of_a_file(tmp_path: Path) -> None:
    text = (
        GOOD.format(name="many")
        .replace("power_dbm = 30.0", "power_dbm = 40.0")
        .replace("reader_mode = 1002", "reader_mode = 7")
        .replace("port = 3", "port = 9")
    )
    (tmp_path / "many.toml").write_text(text, encoding="utf-8")
    assert len(validate_paths([tmp_path])) == 3


def test_name_must_match_file(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text(GOOD.format(name="not-other"), encoding="utf-8")
    with pytest.raises(ConfigError, match="must match the file name"):
        load_profile(path)


def test_diff_and_schema() -> None:
    old = find_profile("impinj-r700-portal")
    new = old.model_copy(update={"version": old.version + 1})
    assert diff_profiles(old, new) == [("version", old.version, old.version + 1)]
    schema = profile_schema()
    assert schema["additionalProperties"] is False
    assert "antennas" in schema["required"]
