"""The reference WMS consumer's pure parts: parsing, idempotent storage, announcement CSVs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InputError
from gateway.wms_sink import _open_db, _parse, _Parsed, _store, load_announcements

JSON_MOVEMENT = {
    "schema": "dock-gateway/movement/1",
    "id": "0b6d6f8e-0000-5000-8000-000000000001",
    "seq": 42,
    "type": "receipt",
    "site": "milan-returns",
    "gateway": "dock-3",
}
EPCIS_DOCUMENT = {
    "type": "EPCISDocument",
    "dg:movementId": "0b6d6f8e-0000-5000-8000-000000000002",
    "dg:seq": 7,
    "dg:site": "milan-returns",
    "dg:gateway": "dock-3",
    "dg:movementType": "inspection",
}


def _bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_parse_json_movement() -> None:
    parsed = _parse(_bytes(JSON_MOVEMENT))
    assert (parsed.id, parsed.site, parsed.gateway, parsed.seq, parsed.type) == (
        JSON_MOVEMENT["id"],
        "milan-returns",
        "dock-3",
        42,
        "receipt",
    )
    assert json.loads(parsed.payload) == JSON_MOVEMENT


def test_parse_epcis_document_reads_the_dg_fields() -> None:
    parsed = _parse(_bytes(EPCIS_DOCUMENT))
    assert (parsed.id, parsed.seq, parsed.type) == (
        EPCIS_DOCUMENT["dg:movementId"],
        7,
        "inspection",
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        _bytes({**JSON_MOVEMENT, "id": 5}),
        _bytes({k: v for k, v in JSON_MOVEMENT.items() if k != "gateway"}),
        _bytes({**JSON_MOVEMENT, "seq": "42"}),
        _bytes({**JSON_MOVEMENT, "seq": True}),
        _bytes({k: v for k, v in EPCIS_DOCUMENT.items() if k != "dg:seq"}),
    ],
    ids=["garbage", "not-utf8", "array", "id-int", "no-gateway", "seq-str", "seq-bool", "epcis"],
)
def test_parse_rejects_bad_movements(payload: bytes) -> None:
    with pytest.raises(InputError):
        _parse(payload)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = _open_db(tmp_path / "wms.db")
    yield connection
    connection.close()


def _item(number: int, seq: int | None = None) -> _Parsed:
    return _Parsed(
        id=f"id-{number}",
        site="milan-returns",
        gateway="dock-3",
        seq=seq if seq is not None else number,
        type="receipt",
        payload=f'{{"n": {number}}}',
    )


def test_store_counts_only_new_ids_and_counts_copies(db: sqlite3.Connection) -> None:
    assert _store(db, [_item(1), _item(2)]) == 2
    assert _store(db, [_item(2), _item(3)]) == 1
    # A copy inside one batch is one new id, stored once.
    assert _store(db, [_item(4), _item(4)]) == 1
    rows = dict(db.execute("SELECT id, copies FROM movements").fetchall())
    assert rows == {"id-1": 1, "id-2": 2, "id-3": 1, "id-4": 2}


def test_store_keeps_the_first_payload_of_an_id(db: sqlite3.Connection) -> None:
    _store(db, [_item(1)])
    changed = _Parsed(
        id="id-1", site="milan-returns", gateway="dock-3", seq=1, type="x", payload="{}"
    )
    assert _store(db, [changed]) == 0
    assert db.execute("SELECT payload, type FROM movements").fetchall() == [('{"n": 1}', "receipt")]


def test_store_survives_reopening(tmp_path: Path) -> None:
    first = _open_db(tmp_path / "wms.db")
    _store(first, [_item(1)])
    first.close()
    second = _open_db(tmp_path / "wms.db")
    try:
        assert _store(second, [_item(1), _item(2)]) == 1
    finally:
        second.close()


HEADER = "rma,customer,epc,gtin,serial,qty,expires_at\n"


def test_load_announcements_groups_rows_by_rma(tmp_path: Path) -> None:
    path = tmp_path / "returns.csv"
    path.write_text(
        HEADER
        + "RMA-1,C-77,urn:epc:id:sgtin:0614141.812345.6789,,,,2026-12-31T00:00:00Z\n"
        + "RMA-1,C-77,,80614141123458,42,,\n"
        + "RMA-2,C-8,,00614141000012,,2,\n",
        encoding="utf-8",
    )
    assert load_announcements(path) == [
        {
            "rma": "RMA-1",
            "customer": "C-77",
            "expires_at": "2026-12-31T00:00:00Z",
            "items": [
                {"epc": "urn:epc:id:sgtin:0614141.812345.6789", "qty": 1},
                {"gtin": "80614141123458", "serial": "42", "qty": 1},
            ],
        },
        {"rma": "RMA-2", "customer": "C-8", "items": [{"gtin": "00614141000012", "qty": 2}]},
    ]


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        (",C-77,,80614141123458,42,1,\n", "line 3: 'rma'"),
        ("RMA-1,C-77,,80614141123458,42,two,\n", "line 3: 'qty'"),
        ("RMA-1,C-77,,80614141123458,42,-1,\n", "line 3: 'qty'"),
    ],
    ids=["no-rma", "qty-word", "qty-negative"],
)
def test_load_announcements_names_the_bad_line(tmp_path: Path, row: str, needle: str) -> None:
    path = tmp_path / "returns.csv"
    path.write_text(HEADER + "RMA-0,C-1,,00614141000012,,1,\n" + row, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_announcements(path)
    assert needle in str(caught.value)


def test_load_announcements_of_a_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="announcements"):
        load_announcements(tmp_path / "missing.csv")
