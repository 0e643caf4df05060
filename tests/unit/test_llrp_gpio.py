"""The simulator's GPI side: scenario beams, typed GPI lines, ROSpec GPI start triggers."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.readers.llrp.scenario import GpiChange, scenario_from_dict, scenario_to_dict
from gateway.readers.simulate_cli import parse_gpi_line


def test_scenario_beams_round_trip() -> None:
    raw = {"duration_s": 10, "gpi": [{"at_s": 1.5, "port": 1, "high": True}]}
    scenario = scenario_from_dict(raw)
    assert scenario.gpi == (GpiChange(1.5, 1, high=True),)
    assert scenario_from_dict(scenario_to_dict(scenario)).gpi == scenario.gpi


def test_generated_scenario_keeps_its_beams() -> None:
    raw = {"generate": {"items": 4, "pallets": 1}, "gpi": [{"at_s": 0, "port": 2, "high": True}]}
    assert scenario_from_dict(raw).gpi == (GpiChange(0.0, 2, high=True),)


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"at_s": 1, "port": 0, "high": True}, "gpi[0].port"),
        ({"at_s": 1, "port": 1, "high": "yes"}, "gpi[0].high"),
        ({"at_s": 1, "port": 1, "high": True, "level": 1}, "gpi[0].level"),
    ],
)
def test_bad_beams_name_the_key(entry: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        scenario_from_dict({"duration_s": 10, "gpi": [entry]})
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("1 high", (1, True)),
        ("2 LOW\n", (2, False)),
        ("3 1", (3, True)),
        ("x high", None),
        ("", None),
    ],
)
def test_typed_gpi_lines(line: str, want: tuple[int, bool] | None) -> None:
    assert parse_gpi_line(line) == want
