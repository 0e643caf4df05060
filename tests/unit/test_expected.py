"""Expected returns: matching, duplicates, completion, bad commands, snapshots."""

from __future__ import annotations

import json

import pytest

from gateway.domain.expected import ExpectedReturns
from gateway.domain.movements import Item
from gateway.errors import InputError

EPC = "urn:epc:id:sgtin:0614141.812345.6789"


def _registry() -> ExpectedReturns:
    registry = ExpectedReturns()
    registry.apply(
        {
            "rma": "RMA-1",
            "customer": "c1",
            "items": [
                {"epc": EPC},
                {"gtin": "80614141123458", "serial": "42"},
                {"gtin": "00614141000012", "qty": 2},
            ],
        }
    )
    return registry


def test_matches_by_epc_serial_and_gtin() -> None:
    registry = _registry()
    assert registry.match(Item(epc=EPC)).rma == "RMA-1"  # type: ignore[union-attr]
    assert registry.match(Item(gtin="80614141123458", serial="42")).line == 1  # type: ignore[union-attr]
    assert registry.match(Item(gtin="00614141000012")).line == 2  # type: ignore[union-attr]
    assert registry.match(Item(gtin="80614141123458", serial="43")) is None
    assert registry.match(Item(code="whatever")) is None


def test_duplicates_flagged_and_completion_once() -> None:
    registry = _registry()
    outcomes = []
    for item in [
        Item(epc=EPC),
        Item(epc=EPC),
        Item(gtin="80614141123458", serial="42"),
        Item(gtin="00614141000012"),
        Item(gtin="00614141000012"),
        Item(gtin="00614141000012"),
    ]:
        match = registry.match(item)
        assert match is not None
        serialised = item.epc is not None or item.serial is not None
        outcomes.append(registry.receive(match, item.key, serialised=serialised))
    assert outcomes == [
        ("new", False),
        ("duplicate", False),
        ("new", False),
        ("new", False),
        ("new", True),
        ("duplicate", False),
    ]
    assert registry.open_count() == 0


def test_a_new_serialised_item_on_a_full_line_is_surplus_not_counted() -> None:
    registry = _registry()
    gtin_only = "00614141000012"  # the line announces 2 units of this GTIN, no serials
    outcomes = []
    for serial in ["s1", "s2", "s3", "s3"]:
        item = Item(gtin=gtin_only, serial=serial)
        match = registry.match(item)
        assert match is not None
        outcomes.append(registry.receive(match, item.key, serialised=True)[0])
    assert outcomes == ["new", "new", "surplus", "duplicate"]
    lines = registry.describe("RMA-1")["lines"]  # type: ignore[index]
    assert lines[2]["received"] == 2, "a line is never counted past its quantity"


def test_cancel_replace_and_snapshot_round_trip() -> None:
    registry = _registry()
    registry.apply(
        {"action": "add", "rmas": [{"rma": "RMA-2", "items": [{"gtin": "123", "qty": 1}]}]}
    )
    assert registry.open_count() == 2
    match = registry.match(Item(epc=EPC))
    assert match is not None
    registry.receive(match, EPC, serialised=True)
    restored = ExpectedReturns.restore(json.loads(json.dumps(registry.snapshot())))
    again = restored.match(Item(epc=EPC))
    assert again is not None
    assert restored.receive(again, EPC, serialised=True) == ("duplicate", False)
    assert restored.match(Item(gtin="00000000000123")) is not None, "short GTINs are padded to 14"
    assert registry.apply({"action": "cancel", "rmas": ["RMA-2"]})["cancelled"] == 1
    registry.apply({"action": "replace", "rmas": []})
    assert len(registry) == 0


@pytest.mark.parametrize(
    "command",
    [
        {"action": "explode"},
        {"rmas": "RMA-1"},
        {"rma": 5},
        {"rma": "R", "items": [{"qty": 1}]},
        {"rma": "R", "items": [{"gtin": "1", "qty": 0}]},
        {"rma": "R", "items": "all"},
        {"rma": "R", "expires_at": "soon"},
        {"ids": 5},
        {"upto_seq": "x"},
        {"action": "add"},
    ],
)
def test_bad_commands_raise_input_error(command: dict[str, object]) -> None:
    with pytest.raises(InputError):
        ExpectedReturns().apply(command)


def test_expiry_drops_rmas() -> None:
    registry = ExpectedReturns()
    registry.apply({"rma": "R", "items": [{"gtin": "1"}], "expires_at": "2026-01-01T00:00:00Z"})
    assert registry.expire(1_700_000_000.0) == []
    assert registry.expire(1_800_000_000.0) == ["R"]
