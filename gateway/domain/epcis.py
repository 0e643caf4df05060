"""EPCIS 2.0 rendering: one movement -> one EPCISDocument (JSON-LD) holding one ObjectEvent.

Choices, each made so every published message validates as-is against the official
EPCIS-JSON-Schema.json with format checking, and means what CBV 2.0 says:

- The message is a whole `EPCISDocument`, not a bare event: the schema validates documents and
  an EPCIS capture interface accepts them unchanged. `creationDate` defaults to the event time so
  the bytes for one movement are the same on every (re)publication; pass `created_at_s` to
  stamp the real time instead.
- `eventID` is the movement id as `urn:uuid:<id>` (ids are UUIDv5, stable across re-derivation).
- `action` is `OBSERVE` (the objects existed before the event) except for `destroying`, which ends
  the object's life and so is `DELETE`.
- bizStep / disposition by movement type (`disposition_code` normalises `DISP-RESTOCK`,
  `restock`, ... to `RESTOCK`):

  | movement | gateway disposition | bizStep | disposition |
  |---|---|---|---|
  | receipt | any | receiving | returned |
  | inspection | RESTOCK | inspecting | conformant |
  | inspection | RECYCLE, DISPOSE | inspecting | non_conformant |
  | inspection | DONATE | inspecting | non_sellable_other (usable, not for sale) |
  | inspection | REPAIR | repairing | damaged (impaired by a defect, routed to repair) |
  | inspection | none or unknown | inspecting | (omitted) |
  | restock | any | stocking | sellable_accessible |
  | disposal | DISPOSE | destroying (action DELETE) | destroyed |
  | disposal | DONATE | collecting | non_sellable_other |
  | disposal | RECYCLE, none, other | collecting | disposed |
  | rma-complete | - | receiving, empty epcList, the RMA in bizTransactionList | (omitted) |
  | gap | - | no event: empty eventList, the gap in the document extension `dg:gap` |

  The gateway's own disposition word always travels unchanged in `dg:disposition`.
- What moved: an EPC URI as decoded (`urn:epc:id:...`, `urn:epc:raw:...`) in `epcList`; a scanned
  GTIN + serial as a GS1 Digital Link `https://id.gs1.org/01/<gtin14>/21/<serial>`; a GTIN without
  serial as a class in `quantityList` (`https://id.gs1.org/01/<gtin14>`, quantity 1, no uom: a
  count); an SSCC as `https://id.gs1.org/00/<sscc>`; a GRAI as `https://id.gs1.org/8003/<grai>`;
  any other code as a private URI `<uri_base><site>/item/<code>`.
- `readPoint` is the station's URI (`station_uris`: an SGLN `urn:epc:id:sgln:...` or any absolute
  URI), else the private `<uri_base><site>/station/<station>`. `bizLocation` is where the object is
  afterwards: the restock location for a restock (used as-is if it is a URI, else
  `<uri_base><site>/location/<location>`), none after `destroying`, else the station.
- The RMA is `{"type": "rma", "bizTransaction": <uri>}`: the RMA as-is if it is a URI, else
  `<uri_base>rma/<RMA>`.
- Gateway fields are JSON-LD extensions under the prefix `dg` declared in `@context`
  (`DG_NAMESPACE`): on the document `dg:movementId`, `dg:movementType`, `dg:seq`, `dg:site`,
  `dg:gateway`; on the event `dg:station`, `dg:direction`, `dg:expected`, `dg:disposition`,
  `dg:location`, `dg:flags`, `dg:detail`, `dg:evidence`. The schema admits any property name that
  is a URI, and `dg:seq` is one.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from gateway.domain.movements import Evidence, Item, Movement
from gateway.domain.wire import rfc3339
from gateway.errors import ConfigError, InputError

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
DG_PREFIX = "dg"
DG_NAMESPACE = "https://dock-gateway.example/ns/epcis/"
DEFAULT_URI_BASE = "https://id.dock-gateway.example/"
DIGITAL_LINK_BASE = "https://id.gs1.org/"

# The CBV 2.0 words this module can emit; a test checks them against CBV.ttl's extract.
CBV_BIZSTEPS_USED = frozenset(
    {"receiving", "inspecting", "repairing", "stocking", "destroying", "collecting"}
)
CBV_DISPOSITIONS_USED = frozenset(
    {
        "returned",
        "conformant",
        "non_conformant",
        "non_sellable_other",
        "damaged",
        "sellable_accessible",
        "destroyed",
        "disposed",
    }
)
CBV_BIZ_TRANSACTION_TYPES_USED = frozenset({"rma"})

# RFC 3986 characters (no IP-literal brackets), with a scheme: what the `uri` format accepts.
_URI = re.compile(
    r"^[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9\-._~:/?#@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+$"
)
_GTIN_LENGTHS = frozenset({8, 12, 13, 14})

# (bizStep, disposition or None) per inspection / disposal disposition code.
_INSPECTION: Mapping[str, tuple[str, str | None]] = {
    "RESTOCK": ("inspecting", "conformant"),
    "RECYCLE": ("inspecting", "non_conformant"),
    "DISPOSE": ("inspecting", "non_conformant"),
    "DONATE": ("inspecting", "non_sellable_other"),
    "REPAIR": ("repairing", "damaged"),
}
_DISPOSAL: Mapping[str, tuple[str, str | None]] = {
    "DISPOSE": ("destroying", "destroyed"),
    "DONATE": ("collecting", "non_sellable_other"),
}
_DISPOSAL_DEFAULT = ("collecting", "disposed")


@dataclass(frozen=True, slots=True)
class EpcisContext:
    """Where the events happen: site, gateway, station URIs, and the base for private URIs."""

    site: str
    gateway: str
    station_uris: Mapping[str, str] = field(default_factory=dict)
    uri_base: str = DEFAULT_URI_BASE

    def __post_init__(self) -> None:
        if not _URI.match(self.uri_base) or self.uri_base[-1] not in "/:":
            raise ConfigError("epcis.uri_base", "must be an absolute URI ending in '/' or ':'")
        for station, uri in self.station_uris.items():
            if not _URI.match(uri):
                raise ConfigError(f"epcis.station_uris.{station}", "not an absolute URI")

    def station_uri(self, station: str) -> str:
        """The station's configured URI, else `<uri_base><site>/station/<station>`."""
        configured = self.station_uris.get(station)
        if configured is not None:
            return configured
        return self._private(f"{_segment(self.site)}/station/{_segment(station)}")

    def location_uri(self, location: str) -> str:
        """A location as-is if it is a URI, else `<uri_base><site>/location/<location>`."""
        if _URI.match(location):
            return location
        return self._private(f"{_segment(self.site)}/location/{_segment(location)}")

    def rma_uri(self, rma: str) -> str:
        """An RMA as-is if it is a URI, else `<uri_base>rma/<rma>`."""
        if _URI.match(rma):
            return rma
        return self._private(f"rma/{_segment(rma)}")

    def item_uri(self, code: str) -> str:
        """A non-GS1 item code as `<uri_base><site>/item/<code>`."""
        return self._private(f"{_segment(self.site)}/item/{_segment(code)}")

    def _private(self, path: str) -> str:
        return f"{self.uri_base}{path}"


def disposition_code(value: str | None) -> str | None:
    """A disposition as its upper-case code without `DISP-` (`disp-restock` -> `RESTOCK`)."""
    if value is None:
        return None
    code = value.strip().upper()
    code = code.removeprefix("DISP-")
    return code or None


def render_epcis(
    movement: Movement, seq: int, ctx: EpcisContext, *, created_at_s: float | None = None
) -> bytes:
    """The EPCIS 2.0 document bytes for one movement (every movement type, gap included)."""
    return json.dumps(
        epcis_document(movement, seq, ctx, created_at_s=created_at_s),
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def epcis_document(
    movement: Movement, seq: int, ctx: EpcisContext, *, created_at_s: float | None = None
) -> dict[str, Any]:
    """The EPCIS 2.0 document for one movement as a dict; raises InputError if the id is no UUID."""
    document: dict[str, Any] = {
        "@context": [EPCIS_CONTEXT, {DG_PREFIX: DG_NAMESPACE}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": rfc3339(movement.occurred_at_s if created_at_s is None else created_at_s),
        "instanceIdentifier": movement.id,
        "dg:movementId": movement.id,
        "dg:movementType": movement.type,
        "dg:seq": seq,
        "dg:site": ctx.site,
        "dg:gateway": ctx.gateway,
    }
    if movement.type == "gap":
        # A gap is what the gateway could not keep: nothing was observed, so no event.
        document["dg:gap"] = {
            "dg:station": movement.station,
            "dg:at": rfc3339(movement.occurred_at_s),
            "dg:detail": dict(movement.detail),
            "dg:evidence": _evidence(movement.evidence),
        }
        document["epcisBody"] = {"eventList": []}
        return document
    document["epcisBody"] = {"eventList": [object_event(movement, ctx)]}
    return document


def object_event(movement: Movement, ctx: EpcisContext) -> dict[str, Any]:
    """The ObjectEvent for a movement other than a gap (see the module docstring)."""
    biz_step, disposition = _step_and_disposition(movement)
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": rfc3339(movement.occurred_at_s),
        "eventTimeZoneOffset": "+00:00",
        "eventID": _event_id(movement.id),
        "action": "DELETE" if biz_step == "destroying" else "OBSERVE",
    }
    if movement.type == "rma-complete":
        # An RMA closes as a whole: no single object moved, so the epcList is empty.
        event["epcList"] = []
    else:
        event.update(_what(movement.item, ctx))
    event["bizStep"] = biz_step
    if disposition is not None:
        event["disposition"] = disposition
    station_uri = ctx.station_uri(movement.station)
    event["readPoint"] = {"id": station_uri}
    if movement.type == "restock" and movement.location:
        event["bizLocation"] = {"id": ctx.location_uri(movement.location)}
    elif biz_step != "destroying":
        event["bizLocation"] = {"id": station_uri}
    if movement.rma:
        event["bizTransactionList"] = [{"type": "rma", "bizTransaction": ctx.rma_uri(movement.rma)}]
    event.update(_extensions(movement))
    return event


def digital_link(gtin: str, serial: str | None = None) -> str:
    """The GS1 Digital Link URI for a GTIN (padded to 14 digits), with AI 21 when serialised."""
    if not gtin.isdigit() or len(gtin) not in _GTIN_LENGTHS:
        raise InputError("gtin", "not an 8, 12, 13 or 14 digit GTIN")
    uri = f"{DIGITAL_LINK_BASE}01/{gtin.zfill(14)}"
    if serial is not None:
        uri += f"/21/{_segment(serial)}"
    return uri


def _step_and_disposition(movement: Movement) -> tuple[str, str | None]:
    code = disposition_code(movement.disposition)
    if movement.type in ("receipt", "rma-complete"):
        return ("receiving", "returned" if movement.type == "receipt" else None)
    if movement.type == "inspection":
        return _INSPECTION.get(code or "", ("inspecting", None))
    if movement.type == "restock":
        return ("stocking", "sellable_accessible")
    return _DISPOSAL.get(code or "", _DISPOSAL_DEFAULT)


def _what(item: Item, ctx: EpcisContext) -> dict[str, Any]:
    if item.epc:
        return {"epcList": [item.epc if _URI.match(item.epc) else ctx.item_uri(item.epc)]}
    if item.gtin and item.gtin.isdigit() and len(item.gtin) in _GTIN_LENGTHS:
        if item.serial:
            return {"epcList": [digital_link(item.gtin, item.serial)]}
        return {"quantityList": [{"epcClass": digital_link(item.gtin), "quantity": 1}]}
    if item.sscc and item.sscc.isdigit() and len(item.sscc) == 18:
        return {"epcList": [f"{DIGITAL_LINK_BASE}00/{item.sscc}"]}
    if item.grai:
        return {"epcList": [f"{DIGITAL_LINK_BASE}8003/{_segment(item.grai)}"]}
    return {"epcList": [ctx.item_uri(item.key)]}


def _event_id(movement_id: str) -> str:
    try:
        return uuid.UUID(movement_id).urn
    except ValueError as exc:
        raise InputError("movement", "id is not a UUID") from exc


def _extensions(movement: Movement) -> dict[str, Any]:
    out: dict[str, Any] = {"dg:station": movement.station, "dg:direction": movement.direction}
    if movement.expected is not None:
        out["dg:expected"] = movement.expected
    if movement.disposition is not None:
        out["dg:disposition"] = movement.disposition
    if movement.location is not None:
        out["dg:location"] = movement.location
    if movement.flags:
        out["dg:flags"] = list(movement.flags)
    if movement.detail:
        out["dg:detail"] = dict(movement.detail)
    out["dg:evidence"] = _evidence(movement.evidence)
    return out


def _evidence(ev: Evidence) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dg:source": ev.source,
        "dg:reader": ev.reader,
        "dg:reads": ev.reads,
        "dg:firstSeen": rfc3339(ev.first_seen_s),
        "dg:lastSeen": rfc3339(ev.last_seen_s),
    }
    if ev.antennas:
        out["dg:antennas"] = list(ev.antennas)
    if ev.zones:
        out["dg:zones"] = list(ev.zones)
    if ev.peak_rssi_dbm is not None:
        out["dg:peakRssiDbm"] = ev.peak_rssi_dbm
    if ev.direction_confidence is not None:
        out["dg:directionConfidence"] = round(ev.direction_confidence, 3)
    if ev.data is not None:
        out["dg:data"] = ev.data
    return out


def _segment(text: str) -> str:
    # Everything outside RFC 3986's unreserved set is escaped, so a '/' in a serial stays data.
    return quote(text, safe="")
