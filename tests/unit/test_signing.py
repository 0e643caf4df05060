"""Signed commands: good ones pass; bad, missing, stale and replayed ones are refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.signing import NonceCache, sign_command, verify_command
from gateway.errors import InputError

KEY = b"k" * 32
NOW = 1_795_000_000.0
BODY = json.dumps({"rma": "RMA-1", "items": [{"gtin": "1"}]})
NONCE = "nonce-0001"


def verify(payload: bytes, nonces: NonceCache | None = None, now_s: float = NOW) -> bytes:
    return verify_command(
        "expected-returns", payload, KEY, now_s=now_s, window_s=300, nonces=nonces or NonceCache()
    )


def test_good_signature_returns_the_body() -> None:
    assert verify(sign_command("expected-returns", BODY, KEY, NOW, NONCE)) == BODY.encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (BODY.encode(), "missing signature"),
        (b"junk", "not JSON"),
        (sign_command("expected-returns", BODY, b"wrong key", NOW, NONCE), "bad signature"),
        (sign_command("profile-apply", BODY, KEY, NOW, NONCE), "bad signature"),
        (sign_command("expected-returns", BODY, KEY, NOW - 3600, NONCE), "window"),
        (sign_command("expected-returns", BODY, KEY, NOW + 3600, NONCE), "window"),
        (sign_command("expected-returns", BODY, KEY, NOW, nonce="short"), "nonce"),
    ],
)
def test_refusals_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(InputError) as info:
        verify(payload)
    assert reason in info.value.reason


def test_tampered_body_is_refused() -> None:
    envelope = json.loads(sign_command("expected-returns", BODY, KEY, NOW, NONCE))
    envelope["body"] = envelope["body"].replace("RMA-1", "RMA-2")
    with pytest.raises(InputError, match="bad signature"):
        verify(json.dumps(envelope).encode())


def test_replay_is_refused_within_the_window() -> None:
    nonces = NonceCache()
    payload = sign_command("expected-returns", BODY, KEY, NOW, NONCE)
    verify(payload, nonces)
    with pytest.raises(InputError, match="replayed"):
        verify(payload, nonces, now_s=NOW + 10)


@given(st.binary(max_size=500))
def test_arbitrary_payloads_raise_only_input_error(payload: bytes) -> None:
    with pytest.raises(InputError):
        verify(payload)
