"""Acks from the WMS: `{"ids": [...]}` or cumulative `{"upto_seq": N}`, parsed with size limits."""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway.errors import InputError

MAX_ACK_BYTES = 512 * 1024
MAX_ACK_IDS = 10_000
MAX_ID_CHARS = 128
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True)
class AckIds:
    """The WMS applied the movements with these ids."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AckUpto:
    """The WMS applied every movement with `seq <= seq`."""

    seq: int


Ack = AckIds | AckUpto


def parse_ack(payload: bytes) -> Ack:
    """Parse an ack payload; raise InputError("ack", reason) for anything else."""
    if len(payload) > MAX_ACK_BYTES:
        raise InputError("ack", f"larger than {MAX_ACK_BYTES} bytes")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError("ack", "not JSON") from exc
    if not isinstance(body, dict):
        raise InputError("ack", "not a JSON object")
    keys = set(body)
    if keys == {"ids"}:
        return AckIds(_ids(body["ids"]))
    if keys == {"upto_seq"}:
        return AckUpto(_seq(body["upto_seq"]))
    raise InputError("ack", "expected exactly one of 'ids' or 'upto_seq'")


def _ids(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InputError("ack", "'ids' must be a list")
    if len(value) > MAX_ACK_IDS:
        raise InputError("ack", f"more than {MAX_ACK_IDS} ids")
    for item in value:
        if not isinstance(item, str):
            raise InputError("ack", "'ids' must hold strings")
        if not item or len(item) > MAX_ID_CHARS:
            raise InputError("ack", f"an id is empty or longer than {MAX_ID_CHARS} characters")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError("ack", "an id is not valid Unicode text") from exc
    return tuple(value)


def _seq(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError("ack", "'upto_seq' must be an integer")
    if value < 0 or value > MAX_SEQ:
        raise InputError("ack", "'upto_seq' out of range")
    return value
