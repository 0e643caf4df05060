"""The reference WMS consumer's pure parts: parsing, idempotent storage, announcement CSVs."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InputError
from gateway.wms_sink import load_announcements
from gateway.wms_store import (
    Gap,
    ParsedMovement,
    open_store,
    parse_movement,
    release_gaps,
    store_batch,
)

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
    parsed = parse_movement(_bytes(JSON_MOVEMENT))
    assert (parsed.id, parsed.site, parsed.gateway, parsed.seq, parsed.type) == (
        JSON_MOVEMENT["id"],
        "milan-returns",
        "dock-3",
        42,
        "receipt",
    )
    assert json.loads(parsed.payload) == JSON_MOVEMENT


def test_parse_epcis_document_reads_the_dg_fields() -> None:
    parsed = parse_movement(_bytes(EPCIS_DOCUMENT))
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
        parse_movement(payload)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_store(tmp_path / "wms.db")
    yield connection
    connection.close()


def _item(number: int, seq: int | None = None) -> ParsedMovement:
    return ParsedMovement(
        id=f"id-{number}",
        site="milan-returns",
        gateway="dock-3",
        seq=seq if seq is not None else number,
        type="receipt",
        payload=f'{{"n": {number}}}',
    )


def test_store_counts_only_new_ids_and_counts_copies(db: sqlite3.Connection) -> None:
    assert store_batch(db, [_item(1), _item(2)]).new == 2
    assert store_batch(db, [_item(2), _item(3)]).new == 1
    # A copy inside one batch is one new id, stored once.
    assert store_batch(db, [_item(4), _item(4)]).new == 1
    rows = dict(db.execute("SELECT id, copies FROM movements").fetchall())
    assert rows == {"id-1": 1, "id-2": 2, "id-3": 1, "id-4": 2}


def test_store_keeps_the_first_payload_of_an_id(db: sqlite3.Connection) -> None:
    store_batch(db, [_item(1)])
    changed = ParsedMovement(
        id="id-1", site="milan-returns", gateway="dock-3", seq=1, type="x", payload="{}"
    )
    assert store_batch(db, [changed]).new == 0
    assert db.execute("SELECT payload, type FROM movements").fetchall() == [('{"n": 1}', "receipt")]


def test_store_survives_reopening(tmp_path: Path) -> None:
    first = open_store(tmp_path / "wms.db")
    store_batch(first, [_item(1)])
    first.close()
    second = open_store(tmp_path / "wms.db")
    try:
        assert store_batch(second, [_item(1), _item(2)]).new == 1
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


# -- seq order per gateway -----------------------------------------------------------------------


def _applied_seqs(db: sqlite3.Connection) -> list[int]:
    return [row[0] for row in db.execute("SELECT seq FROM movements ORDER BY rowid")]


def _parked_seqs(db: sqlite3.Connection) -> list[int]:
    return [row[0] for row in db.execute("SELECT seq FROM parked ORDER BY seq")]


def test_a_movement_ahead_of_its_seq_waits_until_the_gap_fills(db: sqlite3.Connection) -> None:
    store_batch(db, [_item(1)])
    ahead = store_batch(db, [_item(4), _item(3)])
    assert (ahead.new, ahead.stored, ahead.parked) == (2, 0, 2)
    assert _applied_seqs(db) == [1]
    filled = store_batch(db, [_item(2)])
    # The late one and the two parked behind it: applied in seq order, in its commit.
    assert (filled.new, filled.stored, filled.parked) == (1, 3, 0)
    assert _applied_seqs(db) == [1, 2, 3, 4]
    assert _parked_seqs(db) == []
    assert db.execute("SELECT next_seq FROM streams").fetchall() == [(5,)]


def test_a_batch_out_of_order_is_applied_in_order(db: sqlite3.Connection) -> None:
    store_batch(db, [_item(1)])
    outcome = store_batch(db, [_item(5), _item(3), _item(2), _item(4)])
    assert (outcome.stored, outcome.parked) == (4, 0)
    assert _applied_seqs(db) == [1, 2, 3, 4, 5]


def test_gateways_are_ordered_apart(db: sqlite3.Connection) -> None:
    other = ParsedMovement(
        id="other-1", site="milan-returns", gateway="dock-9", seq=7, type="r", payload="{}"
    )
    store_batch(db, [_item(1), other, _item(3)])
    assert _parked_seqs(db) == [3]
    rows = db.execute("SELECT gateway, next_seq FROM streams ORDER BY gateway").fetchall()
    assert rows == [("dock-3", 2), ("dock-9", 8)]


def test_copies_of_parked_and_stored_ids_are_duplicates(db: sqlite3.Connection) -> None:
    store_batch(db, [_item(1), _item(3)])
    again = store_batch(db, [_item(3), _item(1)])
    assert (again.new, again.duplicates, again.stored, again.parked) == (0, 2, 0, 0)
    copies = dict(db.execute("SELECT id, copies FROM parked").fetchall())
    assert copies == {"id-3": 2}
    store_batch(db, [_item(2)])
    # The copy count moves with the row out of `parked`.
    assert dict(db.execute("SELECT id, copies FROM movements").fetchall()) == {
        "id-1": 2,
        "id-2": 1,
        "id-3": 2,
    }


def test_the_first_seq_seen_starts_the_stream_and_an_older_unknown_one_is_stored_late(
    db: sqlite3.Connection,
) -> None:
    # A gateway whose history began before this store: its stream starts where it is met.
    assert store_batch(db, [_item(100)]).stored == 1
    assert store_batch(db, [_item(101)]).stored == 1
    late = store_batch(db, [_item(99)])
    # Never dropped: stored, and counted as late.
    assert (late.stored, late.late, late.parked) == (1, 1, 0)
    assert _applied_seqs(db) == [100, 101, 99]


def test_a_store_from_before_ordering_goes_on_after_what_it_holds(db: sqlite3.Connection) -> None:
    store_batch(db, [_item(1), _item(2)])
    db.execute("DELETE FROM streams")
    db.commit()
    assert store_batch(db, [_item(4)]).parked == 1
    assert store_batch(db, [_item(3)]).stored == 2


def test_parked_movements_survive_a_restart_and_keep_their_order(tmp_path: Path) -> None:
    first = open_store(tmp_path / "wms.db")
    store_batch(first, [_item(1), _item(3), _item(4)])
    first.close()
    second = open_store(tmp_path / "wms.db")
    try:
        assert _parked_seqs(second) == [3, 4]
        assert store_batch(second, [_item(2)]).stored == 3
        assert _applied_seqs(second) == [1, 2, 3, 4]
    finally:
        second.close()


def test_a_gap_is_released_after_the_timeout_and_recorded(db: sqlite3.Connection) -> None:
    store_batch(db, [_item(1), _item(4), _item(5), _item(8)])
    # Parked just now: not old enough to give up on.
    assert release_gaps(db, time.time() - 60) == ([], 0)
    assert _parked_seqs(db) == [4, 5, 8]
    gaps, unparked = release_gaps(db, time.time() + 1)
    assert gaps == [
        Gap("milan-returns", "dock-3", 2, 3),
        Gap("milan-returns", "dock-3", 6, 7),
    ]
    assert unparked == 3
    assert _applied_seqs(db) == [1, 4, 5, 8]
    assert _parked_seqs(db) == []
    recorded = db.execute("SELECT gateway, from_seq, to_seq FROM gaps ORDER BY rowid").fetchall()
    assert recorded == [("dock-3", 2, 3), ("dock-3", 6, 7)]
    # The stream goes on after the released gap; a straggler from it is stored late.
    assert store_batch(db, [_item(9)]).stored == 1
    assert store_batch(db, [_item(2)]).late == 1


def test_unordered_stores_in_arrival_order(db: sqlite3.Connection) -> None:
    outcome = store_batch(db, [_item(1), _item(3)], ordered=False)
    assert (outcome.stored, outcome.parked) == (2, 0)
    assert _parked_seqs(db) == []
