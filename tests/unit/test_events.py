"""Raw events are records: equal ones hash alike, and the type checker refuses to change one."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api as mypy_api

from gateway.domain.events import BarcodeScan, TagRead

ROOT = Path(__file__).resolve().parents[2]


def test_equal_events_are_equal_and_hash_alike() -> None:
    a = TagRead("portal", "door", "3074257BF7194E4000001A85", 3, 1.5, rssi_dbm=-50.0)
    b = TagRead("portal", "door", "3074257BF7194E4000001A85", 3, 1.5, rssi_dbm=-50.0)
    assert a == b
    assert len({a, b}) == 1
    assert a != TagRead("portal", "door", "3074257BF7194E4000001A85", 4, 1.5, rssi_dbm=-50.0)
    assert hash(BarcodeScan("h", "s", "X", 1.0)) == hash(BarcodeScan("h", "s", "X", 1.0))


def test_the_type_checker_refuses_to_change_an_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # where mypy finds the package and the project's settings
    program = (
        "from gateway.domain.events import BarcodeScan, TagRead\n"
        "read = TagRead('portal', 'door', 'E', 3, 1.5)\n"
        "read.antenna = 4\n"
        "scan = BarcodeScan('h', 's', 'X', 1.0)\n"
        "scan.data = 'Y'\n"
    )
    source = tmp_path / "changes_an_event.py"
    source.write_text(program)
    out, _, status = mypy_api.run(["--strict", "--cache-dir", str(tmp_path / "cache"), str(source)])
    assert status == 1
    assert 'Property "antenna" defined in "TagRead" is read-only' in out
    assert 'Property "data" defined in "BarcodeScan" is read-only' in out
