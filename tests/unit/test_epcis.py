"""EPCIS 2.0 rendering: every movement type validates against the official schema, format on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import jsonschema  # no stubs pinned; see the report
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.epcis import (
    CBV_BIZ_TRANSACTION_TYPES_USED,
    CBV_BIZSTEPS_USED,
    CBV_DISPOSITIONS_USED,
    DG_NAMESPACE,
    EPCIS_CONTEXT,
    EpcisContext,
    digital_link,
    disposition_code,
    epcis_document,
    render_epcis,
)
from gateway.domain.movements import Evidence, Item, Movement, MovementType, movement_id
from gateway.errors import ConfigError, InputError

NOW = 1_795_000_000.0
SCHEMA_PATH = (
    Path(__file__).resolve().parents[2].parent
    / "shared/conformance/epcis/schema/EPCIS-JSON-Schema.json"
)
CTX = EpcisContext(
    site="milan-returns",
    gateway="dock-3",
    station_uris={"door-3": "urn:epc:id:sgln:0614141.07346.1234"},
)
SGTIN = "urn:epc:id:sgtin:0614141.812345.6789"
RFID = Evidence(
    source="rfid",
    reader="door-3-portal",
    first_seen_s=NOW - 2,
    last_seen_s=NOW,
    reads=17,
    antennas=(1, 3),
    zones=("outside", "inside"),
    peak_rssi_dbm=-48.5,
    direction_confidence=0.91234,
)
SCAN = Evidence(
    source="barcode", reader="bench-scanner", first_seen_s=NOW, last_seen_s=NOW, data="]C1..."
)


def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    # Without a format checker the schema's `format: uri` on CBV words is ignored, so a bare
    # non-CBV word such as "returning" would pass as a "private URI": the checker is essential.
    return jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


VALIDATOR = _validator()


def _errors(document: object) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(document)]


def _movement(
    kind: MovementType,
    *,
    item: Item | None = None,
    station: str = "door-3",
    disposition: str | None = None,
    location: str | None = None,
    rma: str | None = None,
    expected: bool | None = None,
    flags: tuple[str, ...] = (),
    detail: tuple[tuple[str, str], ...] = (),
    evidence: Evidence = RFID,
) -> Movement:
    item = item or Item(epc=SGTIN, gtin="80614141123458", serial="6789")
    return Movement(
        id=movement_id("dock-3", item.key, station, kind, NOW),
        type=kind,
        occurred_at_s=NOW,
        station=station,
        item=item,
        evidence=evidence,
        direction="in",
        rma=rma,
        expected=expected,
        disposition=disposition,
        location=location,
        flags=flags,
        detail=detail,
    )


def _event(document: dict[str, Any]) -> dict[str, Any]:
    events = document["epcisBody"]["eventList"]
    assert len(events) == 1
    event: dict[str, Any] = events[0]
    return event


# (movement type, gateway disposition, expected bizStep, expected CBV disposition, action)
CASES: list[tuple[MovementType, str | None, str, str | None, str]] = [
    ("receipt", None, "receiving", "returned", "OBSERVE"),
    ("inspection", "DISP-RESTOCK", "inspecting", "conformant", "OBSERVE"),
    ("inspection", "disp-restock", "inspecting", "conformant", "OBSERVE"),
    ("inspection", "restock", "inspecting", "conformant", "OBSERVE"),
    ("inspection", "DISP-REPAIR", "repairing", "damaged", "OBSERVE"),
    ("inspection", "DISP-RECYCLE", "inspecting", "non_conformant", "OBSERVE"),
    ("inspection", "DISP-DISPOSE", "inspecting", "non_conformant", "OBSERVE"),
    ("inspection", "DISP-DONATE", "inspecting", "non_sellable_other", "OBSERVE"),
    ("inspection", None, "inspecting", None, "OBSERVE"),
    ("inspection", "DISP-SOMETHING-NEW", "inspecting", None, "OBSERVE"),
    ("restock", None, "stocking", "sellable_accessible", "OBSERVE"),
    ("disposal", "DISP-RECYCLE", "collecting", "disposed", "OBSERVE"),
    ("disposal", "DISP-DISPOSE", "destroying", "destroyed", "DELETE"),
    ("disposal", "DISP-DONATE", "collecting", "non_sellable_other", "OBSERVE"),
    ("disposal", None, "collecting", "disposed", "OBSERVE"),
    ("rma-complete", None, "receiving", None, "OBSERVE"),
]


@pytest.mark.parametrize(("kind", "disposition", "biz_step", "cbv_disposition", "action"), CASES)
def test_every_type_and_disposition_validates(
    kind: MovementType,
    disposition: str | None,
    biz_step: str,
    cbv_disposition: str | None,
    action: str,
) -> None:
    movement = _movement(kind, disposition=disposition, rma="RMA-000123", expected=True)
    payload = render_epcis(movement, 42, CTX)
    document = json.loads(payload)
    assert _errors(document) == []
    assert document["type"] == "EPCISDocument"
    assert document["schemaVersion"] == "2.0"
    assert document["@context"] == [EPCIS_CONTEXT, {"dg": DG_NAMESPACE}]
    assert document["dg:seq"] == 42
    assert document["dg:movementType"] == kind
    assert document["dg:movementId"] == movement.id
    event = _event(document)
    assert event["type"] == "ObjectEvent"
    assert event["bizStep"] == biz_step
    assert event.get("disposition") == cbv_disposition
    assert event["action"] == action
    assert event["eventID"] == f"urn:uuid:{movement.id}"
    assert event["eventTime"] == "2026-11-18T11:06:40.000Z"
    assert event["eventTimeZoneOffset"] == "+00:00"
    assert event["readPoint"] == {"id": "urn:epc:id:sgln:0614141.07346.1234"}
    assert event["bizTransactionList"] == [
        {"type": "rma", "bizTransaction": "https://id.dock-gateway.example/rma/RMA-000123"}
    ]
    assert event.get("dg:disposition") == disposition
    if biz_step == "destroying":
        assert "bizLocation" not in event
    else:
        assert event["bizLocation"] == {"id": "urn:epc:id:sgln:0614141.07346.1234"}
    if kind == "rma-complete":
        assert event["epcList"] == []
    else:
        assert event["epcList"] == [SGTIN]


def test_gap_is_a_valid_document_without_events() -> None:
    gap = _movement(
        "gap",
        item=Item(code="gap"),
        evidence=Evidence(source="system", reader="buffer", first_seen_s=NOW, last_seen_s=NOW),
        detail=(("lost_raw_reads", "1200"), ("reason", "buffer full")),
    )
    document = json.loads(render_epcis(gap, 7, CTX))
    assert _errors(document) == []
    assert document["epcisBody"]["eventList"] == []
    assert document["dg:movementType"] == "gap"
    assert document["dg:gap"]["dg:detail"] == {"lost_raw_reads": "1200", "reason": "buffer full"}


@pytest.mark.parametrize(
    ("item", "what"),
    [
        (Item(epc=SGTIN, gtin="80614141123458", serial="6789"), {"epcList": [SGTIN]}),
        (
            Item(epc="urn:epc:raw:96.xE2801160600002054D8C7A10"),
            {"epcList": ["urn:epc:raw:96.xE2801160600002054D8C7A10"]},
        ),
        (
            Item(gtin="80614141123458", serial="6789"),
            {"epcList": ["https://id.gs1.org/01/80614141123458/21/6789"]},
        ),
        (
            Item(gtin="4012345123456", serial="A/B 7"),
            {"epcList": ["https://id.gs1.org/01/04012345123456/21/A%2FB%207"]},
        ),
        (
            Item(gtin="80614141123458"),
            {"quantityList": [{"epcClass": "https://id.gs1.org/01/80614141123458", "quantity": 1}]},
        ),
        (
            Item(sscc="106141412345678908"),
            {"epcList": ["https://id.gs1.org/00/106141412345678908"]},
        ),
        (
            Item(grai="08006141411234512"),
            {"epcList": ["https://id.gs1.org/8003/08006141411234512"]},
        ),
        (
            Item(code="SKU 42/ä"),
            {
                "epcList": [
                    "https://id.dock-gateway.example/milan-returns/item/code%3ASKU%2042%2F%C3%A4"
                ]
            },
        ),
    ],
)
def test_what_moved_is_named_by_uri(item: Item, what: dict[str, Any]) -> None:
    document = epcis_document(_movement("receipt", item=item, evidence=SCAN), 1, CTX)
    assert _errors(document) == []
    event = _event(document)
    for key in ("epcList", "quantityList"):
        assert event.get(key) == what.get(key)


def test_restock_location_and_private_station_uri() -> None:
    plain = _movement("restock", station="putaway-1", location="LOC-A-12")
    event = _event(epcis_document(plain, 1, CTX))
    assert event["readPoint"] == {
        "id": "https://id.dock-gateway.example/milan-returns/station/putaway-1"
    }
    assert event["bizLocation"] == {
        "id": "https://id.dock-gateway.example/milan-returns/location/LOC-A-12"
    }
    assert event["dg:location"] == "LOC-A-12"
    uri = _movement("restock", location="urn:epc:id:sgln:0614141.00777.0")
    document = epcis_document(uri, 2, CTX)
    assert _errors(document) == []
    assert _event(document)["bizLocation"] == {"id": "urn:epc:id:sgln:0614141.00777.0"}


def test_receipt_extensions_carry_the_gateway_facts() -> None:
    movement = _movement("receipt", rma="urn:example:rma:77", expected=False, flags=("duplicate",))
    document = epcis_document(movement, 9, CTX)
    assert _errors(document) == []
    event = _event(document)
    assert event["bizTransactionList"] == [{"type": "rma", "bizTransaction": "urn:example:rma:77"}]
    assert event["dg:expected"] is False
    assert event["dg:flags"] == ["duplicate"]
    assert event["dg:evidence"]["dg:reads"] == 17
    assert event["dg:evidence"]["dg:antennas"] == [1, 3]
    assert event["dg:evidence"]["dg:directionConfidence"] == 0.912
    no_rma = _event(epcis_document(_movement("receipt"), 1, CTX))
    assert "bizTransactionList" not in no_rma
    assert "dg:expected" not in no_rma


def test_rendering_is_deterministic_and_creation_date_can_be_stamped() -> None:
    movement = _movement("receipt")
    assert render_epcis(movement, 5, CTX) == render_epcis(movement, 5, CTX)
    stamped = json.loads(render_epcis(movement, 5, CTX, created_at_s=NOW + 60.5))
    assert stamped["creationDate"] == "2026-11-18T11:07:40.500Z"
    assert _errors(stamped) == []


def test_the_check_can_fail() -> None:
    document = epcis_document(_movement("receipt"), 1, CTX)
    assert _errors(document) == []
    broken = json.loads(json.dumps(document))
    _event(broken)["bizStep"] = "returning"
    assert _errors(broken) != []
    # The reason format checking is required: the schema alone takes "returning" for a URI.
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken)) == []
    refurbished = json.loads(json.dumps(document))
    _event(refurbished)["disposition"] = "refurbished"
    assert _errors(refurbished) != []
    bad_id = json.loads(json.dumps(document))
    _event(bad_id)["eventID"] = "not a uri"
    assert _errors(bad_id) != []
    no_time = json.loads(json.dumps(document))
    del _event(no_time)["eventTime"]
    assert _errors(no_time) != []


def test_official_examples_pass_the_same_validator(conformance: Path) -> None:
    examples = sorted((conformance / "epcis" / "examples").iterdir())
    assert len(examples) == 7
    for path in examples:
        assert _errors(json.loads(path.read_text(encoding="utf-8"))) == [], path.name


def test_cbv_words_are_cbv_2(conformance: Path) -> None:
    cbv = json.loads((conformance / "epcis/cbv/cbv-bizstep-disposition.json").read_text("utf-8"))
    biz_steps = {entry["term"] for entry in cbv["bizStep"]}
    dispositions = {entry["term"] for entry in cbv["disposition"]}
    assert biz_steps >= CBV_BIZSTEPS_USED
    assert dispositions >= CBV_DISPOSITIONS_USED
    assert "returning" not in biz_steps
    context = (conformance / "epcis/context/cbv-context-biztransaction-type.jsonld").read_text(
        "utf-8"
    )
    for word in CBV_BIZ_TRANSACTION_TYPES_USED:
        assert f'"{word}": "cbv:BTT-{word}"' in context
    emitted = {case[2] for case in CASES}
    assert emitted == CBV_BIZSTEPS_USED
    assert {case[3] for case in CASES} - {None} == CBV_DISPOSITIONS_USED


def test_digital_link_and_disposition_code() -> None:
    assert digital_link("614141123452") == "https://id.gs1.org/01/00614141123452"
    assert digital_link("96385074", "1") == "https://id.gs1.org/01/00000096385074/21/1"
    with pytest.raises(InputError):
        digital_link("12345")
    assert disposition_code(" disp-Repair ") == "REPAIR"
    assert disposition_code("DISP-") is None
    assert disposition_code(None) is None


def test_bad_context_and_bad_id_are_refused() -> None:
    with pytest.raises(ConfigError) as bad_station:
        EpcisContext(site="s", gateway="g", station_uris={"door-1": "door one"})
    assert bad_station.value.key == "epcis.station_uris.door-1"
    with pytest.raises(ConfigError) as bad_base:
        EpcisContext(site="s", gateway="g", uri_base="https://x.example/no-slash")
    assert bad_base.value.key == "epcis.uri_base"
    movement = _movement("receipt")
    odd = Movement(
        id="not-a-uuid",
        type="receipt",
        occurred_at_s=NOW,
        station="door-3",
        item=movement.item,
        evidence=RFID,
    )
    with pytest.raises(InputError):
        render_epcis(odd, 1, CTX)


_TEXT = st.text(min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["receipt", "inspection", "restock", "disposal", "rma-complete", "gap"]),
    site=_TEXT,
    station=_TEXT,
    code=_TEXT,
    serial=st.none() | _TEXT,
    gtin=st.none() | st.from_regex(r"\A[0-9]{14}\Z"),
    disposition=st.none() | _TEXT,
    location=st.none() | _TEXT,
    rma=st.none() | _TEXT,
)
def test_any_text_still_validates(
    kind: MovementType,
    site: str,
    station: str,
    code: str,
    serial: str | None,
    gtin: str | None,
    disposition: str | None,
    location: str | None,
    rma: str | None,
) -> None:
    ctx = EpcisContext(site=site, gateway="g")
    item = Item(gtin=gtin, serial=serial, code=code)
    movement = _movement(
        kind,
        item=item,
        station=station,
        disposition=disposition,
        location=location,
        rma=rma,
        evidence=SCAN,
    )
    document = json.loads(render_epcis(movement, 1, ctx))
    assert _errors(document) == []


def test_the_table_covers_every_movement_type() -> None:
    # gap has its own test (a document without events); every other type is in CASES.
    assert {case[0] for case in CASES} | {"gap"} == set(get_args(MovementType))
