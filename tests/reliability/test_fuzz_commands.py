"""Fuzzing the command edges: expected-returns, signed envelopes, WMS acks, the command body parser.

The claim: a malformed command or ack raises nothing but InputError, and the state it acts on stays
consistent (counts agree, the snapshot round-trips through JSON and restores to the same state).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.daemon.commands import command_body
from gateway.domain.expected import ExpectedReturns
from gateway.domain.signing import NonceCache, sign_command, verify_command
from gateway.errors import InputError
from gateway.sync import acks

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
KEY = b"fuzz-key"
NOW_S = 1_795_000_000.0
DEEP_ARRAY = b"[" * 100_000
T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
hashable_json = st.none() | st.booleans() | st.integers() | st.text(max_size=20)


def _attempt(call: Callable[[], T], error: type[E]) -> T | E:
    """What `call` returned, or the `error` it raised (a fuzz input may go either way)."""
    try:
        return call()
    except error as exc:
        return exc


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _all_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_all_strings(k), *_all_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _all_strings(v)]
    return []


# -- expected-returns -----------------------------------------------------------------------------

items = st.fixed_dictionaries(
    {},
    optional={
        "epc": st.sampled_from(["urn:epc:id:sgtin:0614141.812345.6789", "3074257BF7194E4000001A85"])
        | json_values,
        "gtin": st.sampled_from(["80614141123458", "614141000012", "1"]) | json_values,
        "serial": st.sampled_from(["1", "42"]) | json_values,
        "qty": st.integers(-2, 100_002) | json_values,
    },
)
rmas = st.fixed_dictionaries(
    {"rma": st.sampled_from(["RMA-1", "RMA-2", "RMA-3", ""]) | st.text(max_size=70) | json_values},
    optional={
        "customer": st.text(max_size=10) | json_values,
        "items": st.lists(items, max_size=4) | json_values,
        "expires_at": st.sampled_from(["2026-11-22T09:00:00Z", "2026-11-22", "soon"]) | json_values,
    },
)
commands = (
    st.fixed_dictionaries(
        {},
        optional={
            "action": st.sampled_from(["add", "replace", "cancel", "drop"]) | hashable_json,
            "rmas": st.lists(rmas | st.sampled_from(["RMA-1", "RMA-2"]), max_size=4) | json_values,
        },
    )
    | rmas.map(dict)
    | st.dictionaries(st.text(max_size=8), json_values, max_size=4)
)


def _assert_consistent(registry: ExpectedReturns) -> None:
    assert 0 <= registry.open_count() <= len(registry)
    text = json.dumps(registry.snapshot(), allow_nan=False)
    restored = ExpectedReturns.restore(json.loads(text))
    assert restored.snapshot() == json.loads(text)
    assert len(restored) == len(registry)
    assert restored.open_count() == registry.open_count()


@FUZZ
@given(sequence=st.lists(commands, max_size=8))
@example(sequence=[{"rma": "RMA-1", "items": [{"epc": "E1"}]}, {"action": "cancel", "rmas": [[1]]}])
def test_expected_returns_only_input_error_and_state_stays_consistent(
    sequence: list[dict[str, Any]],
) -> None:
    registry = ExpectedReturns()
    for command in sequence:
        result = _attempt(functools.partial(registry.apply, command), InputError)
        if isinstance(result, InputError):
            # "time": a bad expires_at, named by parse_rfc3339.
            assert result.what in {"expected-returns", "time"}
        else:
            assert result["open"] == registry.open_count()
            json.dumps(result, allow_nan=False)
        _assert_consistent(registry)


@settings(max_examples=50, deadline=None, database=None)
@given(
    action=st.lists(hashable_json, max_size=2) | st.dictionaries(st.text(max_size=3), hashable_json)
)
@example(action=[])
def test_expected_returns_unhashable_action_is_input_error(action: object) -> None:
    with pytest.raises(InputError):
        ExpectedReturns().apply({"action": action})


@settings(max_examples=50, deadline=None, database=None)
@given(bad=st.sampled_from([5, "x", None, {"rma": ""}, {"rma": "R", "items": 3}]))
@example(bad=5)
def test_expected_returns_rejected_command_changes_nothing(bad: object) -> None:
    registry = ExpectedReturns()
    registry.apply({"rma": "RMA-1", "items": [{"epc": "E1"}]})
    before = registry.snapshot()
    with pytest.raises(InputError):
        registry.apply({"action": "replace", "rmas": [{"rma": "RMA-2"}, bad]})
    assert registry.snapshot() == before


@settings(max_examples=50, deadline=None, database=None)
@given(rma=st.text(min_size=1, max_size=10).map(lambda s: s + "\ud800"))
@example(rma="RMA-\ud800")
def test_expected_returns_accepted_strings_encode_as_utf8(rma: str) -> None:
    registry = ExpectedReturns()
    try:
        registry.apply({"rma": rma, "customer": rma, "items": [{"epc": rma}]})
    except InputError:
        return
    assert all(_utf8_ok(s) for s in _all_strings(registry.snapshot()))


# -- signed command envelopes ---------------------------------------------------------------------


def _verify(payload: bytes, nonces: NonceCache | None = None) -> bytes | None:
    result = _attempt(
        lambda: verify_command(
            "expected-returns",
            payload,
            KEY,
            now_s=NOW_S,
            window_s=300.0,
            nonces=nonces or NonceCache(),
        ),
        InputError,
    )
    if isinstance(result, InputError):
        assert result.what == "signature"
        return None
    return result


def _signed(body: str, ts: object, nonce: str) -> bytes:
    """An envelope with a correct signature over whatever ts and nonce are (the fuzz is inside)."""
    signed = f"expected-returns\n{ts}\n{nonce}\n{body}".encode("utf-8", "surrogatepass")
    sig = hmac.new(KEY, signed, hashlib.sha256).hexdigest()
    return json.dumps({"body": body, "ts": ts, "nonce": nonce, "sig": sig}).encode()


@FUZZ
@given(payload=st.binary(max_size=300))
def test_verify_command_arbitrary_bytes_only_input_error(payload: bytes) -> None:
    assert _verify(payload) is None


envelope_fields = st.fixed_dictionaries(
    {},
    optional={
        "body": st.text(max_size=30) | json_values,
        "ts": st.integers(int(NOW_S) - 600, int(NOW_S) + 600) | json_values,
        "nonce": st.text(min_size=8, max_size=64) | st.text(max_size=70) | json_values,
        "sig": st.text(alphabet="0123456789abcdefABCDEF", max_size=64)
        | st.text(max_size=64)
        | json_values,
    },
)


def _has_known_envelope_bug(envelope: object) -> bool:
    """Lone surrogates or a non-ASCII sig: pinned by the xfail tests below."""
    if any(not _utf8_ok(s) for s in _all_strings(envelope)):
        return True
    return (
        isinstance(envelope, dict)
        and isinstance(envelope.get("sig"), str)
        and (not envelope["sig"].isascii())
    )


@FUZZ
@given(envelope=envelope_fields | json_values)
def test_verify_command_arbitrary_envelopes_only_input_error(envelope: object) -> None:
    assert _verify(json.dumps(envelope).encode()) is None  # nobody here knows the key


@FUZZ
@given(
    body=st.text(max_size=40).filter(_utf8_ok),
    ts=st.integers(int(NOW_S) - 600, int(NOW_S) + 600),
    nonce=st.text(min_size=8, max_size=64).filter(_utf8_ok),
)
def test_verify_command_well_signed_is_accepted_once_inside_the_window(
    body: str, ts: int, nonce: str
) -> None:
    nonces = NonceCache()
    payload = _signed(body, ts, nonce)
    result = _verify(payload, nonces)
    if abs(NOW_S - ts) > 300.0:
        assert result is None
    else:
        assert result == body.encode()
        assert _verify(payload, nonces) is None  # the replay is refused
    assert sign_command("expected-returns", body, KEY, NOW_S, nonce=nonce)


@settings(max_examples=30, deadline=None, database=None)
@given(where=st.sampled_from(["body", "nonce"]))
@example(where="body")
def test_verify_command_lone_surrogate_only_input_error(where: str) -> None:
    envelope: dict[str, object] = {"body": "{}", "ts": int(NOW_S), "nonce": "abcdefgh", "sig": "00"}
    envelope[where] = f"{envelope[where]}\ud800"
    assert _verify(json.dumps(envelope).encode()) is None


@settings(max_examples=30, deadline=None, database=None)
@given(sig=st.text(min_size=1, max_size=64).filter(lambda t: not t.isascii() and _utf8_ok(t)))
@example(sig="\u00e9")
def test_verify_command_non_ascii_sig_only_input_error(sig: str) -> None:
    envelope = {"body": "{}", "ts": int(NOW_S), "nonce": "abcdefgh", "sig": sig}
    assert _verify(json.dumps(envelope).encode()) is None


@settings(max_examples=30, deadline=None, database=None)
@given(digits=st.integers(310, 4000))
@example(digits=400)
def test_verify_command_huge_ts_only_input_error(digits: int) -> None:
    assert _verify(_signed("{}", 10**digits, "abcdefgh")) is None


@settings(max_examples=5, deadline=None, database=None)
@given(depth=st.integers(20_000, 200_000))
@example(depth=100_000)
def test_verify_command_deep_nesting_only_input_error(depth: int) -> None:
    assert _verify(b"[" * depth) is None


# -- WMS acks -------------------------------------------------------------------------------------


ack_shapes = st.fixed_dictionaries(
    {},
    optional={
        "ids": st.lists(st.uuids().map(str) | st.text(max_size=140), max_size=5) | json_values,
        "upto_seq": st.integers(-5, 2**64) | json_values,
    },
)


@FUZZ
@given(
    payload=st.binary(max_size=300)
    | (ack_shapes | json_values).map(lambda v: json.dumps(v).encode())
)
@example(payload=DEEP_ARRAY)
@example(payload=b"x" * (512 * 1024 + 1))
def test_parse_ack_only_input_error(payload: bytes) -> None:
    ack = _attempt(lambda: acks.parse_ack(payload), InputError)
    if isinstance(ack, InputError):
        assert ack.what == "ack"
        return
    if isinstance(ack, acks.AckIds):
        assert all(isinstance(i, str) and 0 < len(i) <= acks.MAX_ID_CHARS for i in ack.ids)
        assert len(ack.ids) <= acks.MAX_ACK_IDS
    else:
        assert isinstance(ack, acks.AckUpto)
        assert 0 <= ack.seq <= acks.MAX_SEQ


@settings(max_examples=30, deadline=None, database=None)
@given(ident=st.text(max_size=20).map(lambda s: s + "\udc80"))
@example(ident="\ud800")
def test_parse_ack_ids_encode_as_utf8(ident: str) -> None:
    try:
        ack = acks.parse_ack(json.dumps({"ids": [ident]}).encode())
    except InputError:
        return
    assert isinstance(ack, acks.AckIds)
    assert all(_utf8_ok(i) for i in ack.ids)


# -- the daemon's command body parser -------------------------------------------------------------


@FUZZ
@given(
    name=st.text(max_size=60),
    payload=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
)
@example(name="expected-returns", payload=b"x" * (4 * 1024 * 1024 + 1))
def test_command_body_only_input_error(name: str, payload: bytes) -> None:
    body = _attempt(lambda: command_body(name, payload), InputError)
    if isinstance(body, InputError):
        assert body.what == name[:40]
        return
    assert isinstance(body, dict)


@settings(max_examples=5, deadline=None, database=None)
@given(depth=st.integers(20_000, 200_000))
@example(depth=100_000)
def test_command_body_deep_nesting_only_input_error(depth: int) -> None:
    with pytest.raises(InputError):
        command_body("expected-returns", b"[" * depth)


@FUZZ
@given(
    capacity=st.integers(1, 20),
    uses=st.lists(
        st.tuples(st.text(min_size=8, max_size=10), st.floats(NOW_S - 300, NOW_S + 300)),
        max_size=80,
    ),
)
def test_nonce_cache_stays_bounded_and_refuses_replays(
    capacity: int, uses: list[tuple[str, float]]
) -> None:
    cache = NonceCache(capacity)
    for nonce, ts_s in uses:
        # verify_command checks the window first: only fresh timestamps reach the cache.
        fresh = cache.check_and_add(nonce, ts_s, 300.0, NOW_S)
        assert len(cache._seen) <= capacity
        if fresh:
            assert not cache.check_and_add(nonce, ts_s, 300.0, NOW_S)  # the replay, at once
