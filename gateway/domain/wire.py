"""Wire formats owned by the domain: the movement JSON message and the raw-event JSONL lines."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from gateway.domain.events import BarcodeScan, RawEvent, TagRead
from gateway.domain.movements import Movement
from gateway.errors import InputError

MOVEMENT_SCHEMA = "dock-gateway/movement/1"
MAX_RAW_LINE_BYTES = 64 * 1024
_HEX_DIGITS = frozenset("0123456789ABCDEF")


def rfc3339(at_s: float) -> str:
    """UTC RFC 3339 with milliseconds and a Z, as every message carries times."""
    return (
        datetime.fromtimestamp(at_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def parse_rfc3339(text: str) -> float:
    """Seconds since the epoch from an RFC 3339 time; a time without offset is UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise InputError("time", f"not an RFC 3339 time: {text[:40]!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def movement_dict(movement: Movement, seq: int, site: str, gateway: str) -> dict[str, Any]:
    """The movement message as a dict, field order as in DESIGN.md."""
    item = movement.item
    item_out: dict[str, Any] = {"epc": item.epc, "gtin": item.gtin, "serial": item.serial}
    for name in ("sscc", "grai", "code"):
        value = getattr(item, name)
        if value is not None:
            item_out[name] = value
    ev = movement.evidence
    evidence: dict[str, Any] = {
        "source": ev.source,
        "reader": ev.reader,
        "antennas": list(ev.antennas),
        "reads": ev.reads,
        "peak_rssi_dbm": ev.peak_rssi_dbm,
        "first_seen": rfc3339(ev.first_seen_s),
        "last_seen": rfc3339(ev.last_seen_s),
    }
    if ev.zones:
        evidence["zones"] = list(ev.zones)
    if ev.direction_confidence is not None:
        evidence["direction_confidence"] = round(ev.direction_confidence, 3)
    if ev.data is not None:
        evidence["data"] = ev.data
    message: dict[str, Any] = {
        "schema": MOVEMENT_SCHEMA,
        "id": movement.id,
        "seq": seq,
        "type": movement.type,
        "occurred_at": rfc3339(movement.occurred_at_s),
        "site": site,
        "gateway": gateway,
        "station": movement.station,
        "direction": movement.direction,
        "item": item_out,
        "rma": movement.rma,
        "expected": movement.expected,
        "disposition": movement.disposition,
        "location": movement.location,
        "evidence": evidence,
    }
    if movement.flags:
        message["flags"] = list(movement.flags)
    if movement.detail:
        message["detail"] = dict(movement.detail)
    return message


def render_movement_json(movement: Movement, seq: int, site: str, gateway: str) -> bytes:
    """The movement message bytes published on `{prefix}/{site}/{gateway}/movements`."""
    return json.dumps(
        movement_dict(movement, seq, site, gateway), separators=(",", ":"), ensure_ascii=False
    ).encode()


def raw_event_dict(event: RawEvent) -> dict[str, Any]:
    """A raw event as one JSONL object (the replay format; `buffer export --raw` writes it)."""
    if isinstance(event, TagRead):
        out: dict[str, Any] = {"kind": "tag", "epc": event.epc_hex, "antenna": event.antenna}
        if event.rssi_dbm is not None:
            out["rssi_dbm"] = event.rssi_dbm
        if event.read_count != 1:
            out["count"] = event.read_count
        if event.channel is not None:
            out["channel"] = event.channel
    else:
        out = {"kind": "barcode", "data": event.data}
        if event.device is not None:
            out["device"] = event.device
    out["at"] = rfc3339(event.at_s)
    out["reader"] = event.reader
    out["station"] = event.station
    return out


def parse_raw_line(line: str | bytes, *, reader: str, station: str, now_s: float) -> RawEvent:
    """One JSONL line to a raw event; `reader`/`station`/`now_s` fill what the line leaves out."""
    if len(line) > MAX_RAW_LINE_BYTES:
        raise InputError("raw event", f"line longer than {MAX_RAW_LINE_BYTES} bytes")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError("raw event", "not JSON") from exc
    if not isinstance(obj, dict):
        raise InputError("raw event", "not a JSON object")
    at_s = _time_field(obj, now_s)
    station_out = _str_field(obj, "station", default=station)
    reader_out = _str_field(obj, "reader", default=reader)
    kind = obj.get("kind")
    if kind == "barcode":
        return _barcode(obj, reader_out, station_out, at_s)
    if kind == "tag":
        return _tag(obj, reader_out, station_out, at_s)
    raise InputError("raw event", f"unknown kind {str(kind)[:20]!r}; expected 'tag' or 'barcode'")


def _barcode(obj: dict[str, Any], reader: str, station: str, at_s: float) -> BarcodeScan:
    data = obj.get("data")
    if not isinstance(data, str) or not data:
        raise InputError("raw event", "barcode needs a non-empty string 'data'")
    device = obj.get("device")
    if device is not None and not isinstance(device, str):
        raise InputError("raw event", "'device' must be a string")
    return BarcodeScan(reader=reader, station=station, data=data, at_s=at_s, device=device)


def _tag(obj: dict[str, Any], reader: str, station: str, at_s: float) -> TagRead:
    epc = obj.get("epc")
    if not isinstance(epc, str) or not epc or len(epc) > 128:
        raise InputError("raw event", "tag needs a hex string 'epc' (at most 128 digits)")
    if not _HEX_DIGITS.issuperset(epc.upper()):
        raise InputError("raw event", "'epc' is not hex")
    antenna = obj.get("antenna", 1)
    if not isinstance(antenna, int) or isinstance(antenna, bool) or not 0 <= antenna <= 65535:
        raise InputError("raw event", "'antenna' must be an integer 0-65535")
    return TagRead(
        reader=reader,
        station=station,
        epc_hex=epc.upper(),
        antenna=antenna,
        at_s=at_s,
        rssi_dbm=_float_field(obj, "rssi_dbm"),
        read_count=_int_field(obj, "count", default=1),
        channel=_int_field(obj, "channel", default=None),
    )


def _time_field(obj: dict[str, Any], now_s: float) -> float:
    at = obj.get("at")
    if at is None:
        return now_s
    if not isinstance(at, str):
        raise InputError("raw event", "'at' must be an RFC 3339 string")
    return parse_rfc3339(at)


def _str_field(obj: dict[str, Any], name: str, *, default: str) -> str:
    value = obj.get(name, default)
    if not isinstance(value, str) or not value or len(value) > 128:
        raise InputError("raw event", f"'{name}' must be a non-empty string")
    return value


def _float_field(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError("raw event", f"'{name}' must be a number")
    try:
        number = float(value)
    except OverflowError as exc:
        raise InputError("raw event", f"'{name}' is out of range") from exc
    if not math.isfinite(number):
        raise InputError("raw event", f"'{name}' must be a finite number")
    return number


def _int_field(obj: dict[str, Any], name: str, *, default: int | None) -> Any:
    value = obj.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError("raw event", f"'{name}' must be a non-negative integer")
    return value
