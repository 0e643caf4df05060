"""Who may change things: sessions, CSRF tokens, and a throttle on login attempts.

One password for the technicians (from the environment variable `[console] password_env` names);
each technician signs in under their own name, which goes into the profile history. Sessions live in
memory: a daemon restart signs everyone out, which is fine for a page used on site.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

SESSION_COOKIE = "dock_console"
CSRF_HEADER = "X-CSRF-Token"
SESSION_IDLE_S = 8 * 3600.0
SESSIONS_MAX = 200
PENDING_SESSIONS_MAX = 50
LOGIN_FAILURES_MAX = 5
LOGIN_WINDOW_S = 60.0
SITE_GUESSES_MAX = 30
_THROTTLED_ADDRESSES_MAX = 10_000
_TRUSTED_ADDRESSES_MAX = 1_000
_TRUSTED_FOR_S = 30 * 24 * 3600.0
USER_MAX_CHARS = 64


@dataclass(slots=True)
class Session:
    """A signed-in page: its user, the client address, and the token every change must carry."""

    token: str
    user: str
    address: str
    csrf: str
    seen_s: float
    confirmed: bool = False

    def csrf_ok(self, presented: str | None) -> bool:
        """Whether a change carries this session's CSRF token (constant time; malformed: False)."""
        # compare_digest raises TypeError on non-ASCII text: a malformed token is just wrong.
        return (
            presented is not None
            and presented.isascii()
            and hmac.compare_digest(presented, self.csrf)
        )


class Sessions:
    """Sessions by cookie token: idle ones expire, and the unproven never push out the proven.

    A session is proven once it signed in with the password or its cookie came back (a page that
    loaded and then called the API). Anonymous loopback sessions start unproven, in a pool of their
    own bounded by PENDING_SESSIONS_MAX: cookieless requests (another web site can make them, the
    cookie is SameSite=Strict) evict only each other, never a technician's page.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._sessions: dict[str, Session] = {}
        self._pending: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def pending(self) -> int:
        """Anonymous sessions whose cookie has not come back yet."""
        return len(self._pending)

    def create(self, user: str, address: str, *, signed_in: bool) -> Session:
        """A new session for this user at this address; proven at once if `signed_in`."""
        session = Session(
            token=secrets.token_urlsafe(32),
            user=user,
            address=address,
            csrf=secrets.token_urlsafe(32),
            seen_s=self._monotonic(),
        )
        if signed_in:
            self._admit(session)
        else:
            while len(self._pending) >= PENDING_SESSIONS_MAX:
                self._pending.popitem(last=False)
            self._pending[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session of this cookie token, touched; None if unknown or idle too long."""
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            session = self._pending.pop(token, None)
            if session is None:
                return None
            self._admit(session)  # its cookie came back: a page of this site holds it
        now = self._monotonic()
        if now - session.seen_s > SESSION_IDLE_S:
            del self._sessions[token]
            return None
        session.seen_s = now
        return session

    def drop(self, token: str) -> None:
        """Sign out."""
        self._sessions.pop(token, None)
        self._pending.pop(token, None)

    def _admit(self, session: Session) -> None:
        if len(self._sessions) >= SESSIONS_MAX:
            oldest = min(self._sessions.values(), key=lambda s: s.seen_s)
            del self._sessions[oldest.token]
        session.confirmed = True
        self._sessions[session.token] = session


class LoginThrottle:
    """Login attempts per address and site-wide, each counted before its body is read.

    `reserve` takes a slot when the request's headers are in, so guesses whose bodies arrive later
    are counted all the same; a success gives the address its slots back. Per address (an IPv6
    client by its /64): LOGIN_FAILURES_MAX attempts per LOGIN_WINDOW_S. Site-wide: SITE_GUESSES_MAX
    attempts per LOGIN_WINDOW_S from addresses that have not signed in before, so guessing from
    many addresses is slowed too; an address that signed in within the last 30 days skips the
    site-wide ceiling. Every refusal ends within LOGIN_WINDOW_S of the last attempt counted.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._attempts: dict[str, deque[float]] = {}
        self._site: deque[float] = deque(maxlen=SITE_GUESSES_MAX)
        self._trusted: OrderedDict[str, float] = OrderedDict()

    def reserve(self, address: str) -> float | None:
        """Count an attempt from this address now; or the seconds to wait if it may not try."""
        key = _client_key(address)
        now = self._monotonic()
        attempts = self._attempts.get(key)
        if attempts is not None:
            _forget_before(attempts, now - LOGIN_WINDOW_S)
            if len(attempts) >= LOGIN_FAILURES_MAX:
                return _wait_s(attempts, now)
        trusted = now - self._trusted.get(key, -_TRUSTED_FOR_S) < _TRUSTED_FOR_S
        if not trusted:
            _forget_before(self._site, now - LOGIN_WINDOW_S)
            if len(self._site) >= SITE_GUESSES_MAX:
                return _wait_s(self._site, now)
            self._site.append(now)
        if attempts is None:
            if len(self._attempts) >= _THROTTLED_ADDRESSES_MAX:
                self._attempts.pop(next(iter(self._attempts)))
            attempts = self._attempts[key] = deque(maxlen=LOGIN_FAILURES_MAX)
        attempts.append(now)
        return None

    def succeeded(self, address: str) -> None:
        """The attempt was right: forget this address's attempts and let it skip the site limit."""
        key = _client_key(address)
        self._attempts.pop(key, None)
        self._trusted.pop(key, None)
        while len(self._trusted) >= _TRUSTED_ADDRESSES_MAX:
            self._trusted.popitem(last=False)
        self._trusted[key] = self._monotonic()


def password_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison of two passwords of any length."""
    # surrogatepass: a lone surrogate from a JSON body is a wrong password, not a crash.
    return hmac.compare_digest(
        hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest(),
        hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest(),
    )


def clean_user(text: str) -> str:
    """A user name fit for the history: printable, trimmed, at most USER_MAX_CHARS."""
    return "".join(ch for ch in text if ch.isprintable()).strip()[:USER_MAX_CHARS]


def _client_key(address: str) -> str:
    """The throttle's key for a client: its address, or its /64 for IPv6 (one host's share)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _forget_before(times: deque[float], cutoff: float) -> None:
    while times and times[0] <= cutoff:
        times.popleft()


def _wait_s(times: deque[float], now: float) -> float:
    return max(1.0, LOGIN_WINDOW_S - (now - times[0]))
