"""Who may change things: sessions, CSRF tokens, and a throttle on failed logins.

One password for the technicians (from the environment variable `[console] password_env` names);
each technician signs in under their own name, which goes into the profile history. Sessions live in
memory: a daemon restart signs everyone out, which is fine for a page used on site.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

SESSION_COOKIE = "dock_console"
CSRF_HEADER = "X-CSRF-Token"
SESSION_IDLE_S = 8 * 3600.0
SESSIONS_MAX = 200
LOGIN_FAILURES_MAX = 5
LOGIN_WINDOW_S = 60.0
_THROTTLED_ADDRESSES_MAX = 10_000
USER_MAX_CHARS = 64


@dataclass(slots=True)
class Session:
    """A signed-in page: its user, the client address, and the token every change must carry."""

    token: str
    user: str
    address: str
    csrf: str
    seen_s: float

    def csrf_ok(self, presented: str | None) -> bool:
        """Whether a change carries this session's CSRF token (constant-time compare)."""
        return presented is not None and hmac.compare_digest(presented, self.csrf)


class Sessions:
    """Sessions by cookie token; idle ones expire, the oldest go when there are too many."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, user: str, address: str) -> Session:
        """A new session for this user at this address."""
        if len(self._sessions) >= SESSIONS_MAX:
            oldest = min(self._sessions.values(), key=lambda s: s.seen_s)
            del self._sessions[oldest.token]
        session = Session(
            token=secrets.token_urlsafe(32),
            user=user,
            address=address,
            csrf=secrets.token_urlsafe(32),
            seen_s=self._monotonic(),
        )
        self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session of this cookie token, touched; None if unknown or idle too long."""
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self._monotonic()
        if now - session.seen_s > SESSION_IDLE_S:
            del self._sessions[token]
            return None
        session.seen_s = now
        return session

    def drop(self, token: str) -> None:
        """Sign out."""
        self._sessions.pop(token, None)


class LoginThrottle:
    """At most LOGIN_FAILURES_MAX failed logins per client address per LOGIN_WINDOW_S."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._failures: dict[str, deque[float]] = {}

    def retry_after_s(self, address: str) -> float | None:
        """Seconds this address must wait before trying again, or None if it may try now."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        now = self._monotonic()
        while failures and now - failures[0] > LOGIN_WINDOW_S:
            failures.popleft()
        if len(failures) < LOGIN_FAILURES_MAX:
            return None
        return max(1.0, LOGIN_WINDOW_S - (now - failures[0]))

    def failed(self, address: str) -> None:
        """Count one failed login from this address."""
        if address not in self._failures and len(self._failures) >= _THROTTLED_ADDRESSES_MAX:
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(address, deque(maxlen=LOGIN_FAILURES_MAX)).append(
            self._monotonic()
        )

    def succeeded(self, address: str) -> None:
        """Forget this address's failures."""
        self._failures.pop(address, None)


def password_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison of two passwords of any length."""
    return hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def clean_user(text: str) -> str:
    """A user name fit for the history: printable, trimmed, at most USER_MAX_CHARS."""
    return "".join(ch for ch in text if ch.isprintable()).strip()[:USER_MAX_CHARS]
