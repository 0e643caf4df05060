"""Signed commands: HMAC-SHA256 over name, timestamp, nonce and the command text; replays refused.

Envelope (JSON): {"body": "<the command's JSON, as a string>", "ts": <unix seconds>,
"nonce": "<unique, 8-64 chars>", "sig": "<hex HMAC-SHA256>"}; the signed bytes are
`"{name}\\n{ts}\\n{nonce}\\n{body}"` in UTF-8. Carrying the body as a string keeps the signature
independent of any JSON re-encoding by the sender's or receiver's library.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import OrderedDict

from gateway.errors import InputError

MAX_NONCES = 10_000
MAX_TS = 2**53  # exact as a float; far beyond any real clock


class NonceCache:
    """Nonces seen within the window, bounded: a replayed command is refused."""

    def __init__(self, capacity: int = MAX_NONCES) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._capacity = capacity

    def check_and_add(self, nonce: str, ts_s: float, window_s: float, now_s: float) -> bool:
        """False if this nonce was already used within the window."""
        horizon = now_s - window_s
        while self._seen and next(iter(self._seen.values())) < horizon:
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        self._seen[nonce] = ts_s
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


def sign_command(name: str, body: bytes | str, key: bytes, ts_s: float, nonce: str) -> bytes:
    """The signed envelope for a command body; the caller draws the nonce (unique, 8-64 chars)."""
    text = body.decode() if isinstance(body, bytes) else body
    ts = int(ts_s)
    sig = hmac.new(key, _signed_bytes(name, ts, nonce, text), hashlib.sha256).hexdigest()
    return json.dumps({"body": text, "ts": ts, "nonce": nonce, "sig": sig}).encode()


def verify_command(
    name: str,
    payload: bytes,
    key: bytes,
    *,
    now_s: float,
    window_s: float,
    nonces: NonceCache,
) -> bytes:
    """The command body if the envelope is well signed, fresh and new; else InputError (why)."""
    body, ts, nonce, sig = _envelope(payload)
    try:
        signed = _signed_bytes(name, ts, nonce, body)
    except UnicodeEncodeError as exc:
        raise InputError("signature", "body and nonce must be valid Unicode text") from exc
    expected = hmac.new(key, signed, hashlib.sha256).hexdigest()
    # compare_digest refuses non-ASCII str with TypeError: such a sig is simply wrong.
    if not sig.isascii() or not hmac.compare_digest(expected, sig.lower()):
        raise InputError("signature", "bad signature")
    if abs(now_s - ts) > window_s:
        raise InputError("signature", f"timestamp outside the {window_s:.0f}s window")
    if not nonces.check_and_add(nonce, float(ts), window_s, now_s):
        raise InputError("signature", "replayed command (nonce already used)")
    return body.encode()


def _envelope(payload: bytes) -> tuple[str, int, str, str]:
    try:
        envelope = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError("signature", "envelope is not JSON") from exc
    if not isinstance(envelope, dict) or not {"body", "ts", "nonce", "sig"} <= envelope.keys():
        raise InputError("signature", "missing signature envelope (body, ts, nonce, sig)")
    body, ts, nonce, sig = envelope["body"], envelope["ts"], envelope["nonce"], envelope["sig"]
    if not isinstance(body, str) or not isinstance(nonce, str) or not isinstance(sig, str):
        raise InputError("signature", "body, nonce and sig must be strings")
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX_TS:
        raise InputError("signature", "ts must be an integer (unix seconds)")
    if not 8 <= len(nonce) <= 64:
        raise InputError("signature", "nonce must have 8 to 64 characters")
    return body, ts, nonce, sig


def _signed_bytes(name: str, ts: int, nonce: str, body: str) -> bytes:
    return f"{name}\n{ts}\n{nonce}\n{body}".encode()
