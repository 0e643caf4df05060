"""The console's defences, attacked with raw HTTP against the real server on a free loopback port.

Each test is one attack of issue 23: a rebound `Host`, guesses whose bodies come after their
headers, a non-ASCII CSRF token, framing, plain HTTP, cookieless requests evicting sessions. The
server is the daemon's own `HealthServer` with the real `Console`; only the daemon behind the
console is a fixed view. Requests are written byte for byte, so nothing a client library cleans up
(a header it refuses, a body it sends at once) hides what the server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.console.activity import RecentActivity
from gateway.console.auth import (
    LOGIN_FAILURES_MAX,
    SESSION_COOKIE,
    SESSIONS_MAX,
    SITE_GUESSES_MAX,
)
from gateway.console.tags import TagsInView
from gateway.console.web import Console
from gateway.daemon.console_view import console_hosts, console_tls
from gateway.domain.expected import ExpectedReturns
from gateway.operations import _get_health
from gateway.profiles import DEFAULT_PROFILE_DIR, Profile
from gateway.runtime.health import HealthServer
from gateway.runtime.hosts import HostAllowList, host_of

PASSWORD = "correct horse battery staple"
ALIAS = "dock-3.returns.example"
_HEALTH = {"readers": {}, "broker": {"connected": True}, "buffer": {}}


class _Daemon:
    """The daemon as the console sees it: no readers, nothing applied."""

    def __init__(self) -> None:
        self.tags = TagsInView()
        self.activity = RecentActivity()

    def health(self) -> Mapping[str, Any]:
        return _HEALTH

    def profiles_in_force(self) -> Mapping[str, Profile]:
        return {}

    def profile_dir(self) -> Path:
        return DEFAULT_PROFILE_DIR

    async def profile_history(self) -> list[dict[str, Any]]:
        return []

    async def apply_profile(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "outcome": "invalid", "reason": "no reader here"}

    async def expected_returns(self, query: str) -> ExpectedReturns | None:
        return None


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP response as it came off the socket."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first header of this name, or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def cookies(self) -> list[str]:
        """Every Set-Cookie header."""
        return [v for k, v in self.headers if k.lower() == "set-cookie"]

    def session(self) -> str | None:
        """The session cookie's value set by this response, if any."""
        for cookie in self.cookies():
            name, _, rest = cookie.partition("=")
            if name == SESSION_COOKIE:
                return rest.split(";", 1)[0]
        return None

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass(slots=True)
class Server:
    """A running server: its port, its console, how to reach it."""

    port: int
    console: Console
    tls: ssl.SSLContext | None = None

    async def send(
        self,
        method: str,
        path: str,
        *,
        host: str | None = None,
        headers: Mapping[str, str] | None = None,
        raw_headers: bytes = b"",
        body: bytes = b"",
        source: str = "127.0.0.1",
    ) -> Reply:
        """Write one request byte for byte (Host defaults to 127.0.0.1:PORT) and read the reply."""
        reader, writer = await self.open(source)
        writer.write(self.head(method, path, host=host, headers=headers, length=len(body)))
        writer.write(raw_headers + b"\r\n" + body)
        return await read_reply(reader, writer)

    async def open(self, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, Any]:
        """A connection from this loopback source address."""
        return await asyncio.open_connection(
            "127.0.0.1",
            self.port,
            local_addr=(source, 0),
            ssl=self.tls,
            server_hostname="127.0.0.1" if self.tls else None,
        )

    def head(
        self,
        method: str,
        path: str,
        *,
        host: str | None = None,
        headers: Mapping[str, str] | None = None,
        length: int = 0,
    ) -> bytes:
        """The request line and headers, without the blank line that ends them."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{self.port}'}"]
        lines += ["Connection: close", f"Content-Length: {length}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n").encode()

    async def page(self) -> tuple[str, str]:
        """Load the page on a loopback console: (session cookie, CSRF token)."""
        reply = await self.send("GET", "/")
        assert reply.status == 200
        cookie = reply.session()
        assert cookie is not None
        return cookie, _csrf(reply.body)

    async def login(self, user: str = "ana", password: str = PASSWORD) -> Reply:
        """Sign in with JSON."""
        body = json.dumps({"user": user, "password": password}).encode()
        return await self.send(
            "POST", "/login", headers={"Content-Type": "application/json"}, body=body
        )


async def read_reply(reader: asyncio.StreamReader, writer: Any) -> Reply:
    """Read a whole response (the server closes after it: Connection: close), then close."""
    try:
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        # The server may have reset a connection whose body it never read.
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return Reply(status, headers, body)


def _csrf(page: bytes) -> str:
    found = re.search(rb'<meta name="csrf-token" content="([^"]+)">', page)
    assert found is not None
    return found.group(1).decode()


@asynccontextmanager
async def serving(
    *,
    login_required: bool = False,
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    port: int = 0,
) -> AsyncIterator[Server]:
    """The daemon's HTTP server with the console, on loopback; `tls` is (server, client)."""
    console = Console(_Daemon(), login_required=login_required, password=PASSWORD)
    server = HealthServer(
        f"127.0.0.1:{port}",
        lambda: _HEALTH,
        actions={"profile-apply": _refuse},
        extension=console,
        hosts=HostAllowList("127.0.0.1", [ALIAS]),
        ssl_context=None if tls is None else tls[0],
    )
    async with server:
        yield Server(server.port, console, None if tls is None else tls[1])


async def _refuse(body: dict[str, Any]) -> dict[str, Any]:
    return {"ok": False, "reason": "no reader", "echo": body.get("reader")}


# -- DNS rebinding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:9108", "127.0.0.1"),
        ("LOCALHOST.:9108", "localhost"),
        ("[::1]:9108", "::1"),
        ("[::1]", "::1"),
        ("evil.example", "evil.example"),
        ("evil.example:80:80", None),
        ("[::1]x", None),
        ("evil.example:port", None),
        ("évil.example", None),
        ("evil example", None),
    ],
)
def test_host_of_a_host_header(header: str, host: str | None) -> None:
    assert host_of(header) == host


async def test_rebound_host_gets_nothing_not_even_health_or_a_session() -> None:
    async with serving() as server:
        evil = f"evil.example:{server.port}"
        # The attack: the page under the attacker's name, to get a cookie and its CSRF token.
        for path in ("/", "/healthz", "/metrics", "/console/api/state", "/static/console.js"):
            reply = await server.send("GET", path, host=evil)
            assert reply.status == 421, path
            assert reply.session() is None
            assert b"csrf" not in reply.body
        # With a token taken honestly, a change under the attacker's name is refused all the same.
        cookie, csrf = await server.page()
        change = {
            "Content-Type": "application/json",
            "Cookie": f"{SESSION_COOKIE}={cookie}",
            "X-CSRF-Token": csrf,
            "Origin": f"http://{evil}",
        }
        body = json.dumps({"reader": "door-3-portal", "name": "test-low"}).encode()
        for path in ("/console/api/profiles/check", "/actions/profile-apply"):
            reply = await server.send("POST", path, host=evil, headers=change, body=body)
            assert reply.status == 421, path
        # A known Host with a foreign Origin: refused by the origin check.
        reply = await server.send("POST", "/console/api/profiles/check", headers=change, body=body)
        assert reply.status == 403
        # The names the gateway is reached by still work: its address, localhost, the alias.
        for name in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", ALIAS.upper()):
            assert (await server.send("GET", "/healthz", host=name)).status == 200, name
        own = dict(change, Origin=f"http://localhost:{server.port}")
        reply = await server.send(
            "POST",
            "/console/api/profiles/check",
            host=f"localhost:{server.port}",
            headers=own,
            body=body,
        )
        assert reply.status == 200
        assert "errors" in reply.json()  # judged: the check ran


async def test_origin_null_passes_only_when_the_browser_says_same_origin() -> None:
    # Referrer-Policy: no-referrer makes the browser send Origin: null on the login form's POST;
    # a sandboxed frame elsewhere sends it too, but with Sec-Fetch-Site: cross-site.
    async with serving(login_required=True) as server:
        form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "null"}
        body = b"user=ana&password=wrong"
        for site, status in (("same-origin", 401), ("cross-site", 403), ("same-site", 403)):
            headers = {**form, "Sec-Fetch-Site": site}
            reply = await server.send("POST", "/login", headers=headers, body=body)
            assert reply.status == status, site
        assert (await server.send("POST", "/login", headers=form, body=body)).status == 403
        own = {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{server.port}"}
        reply = await server.send(
            "POST", "/login", headers={**own, "Sec-Fetch-Site": "cross-site"}, body=b"{}"
        )
        assert reply.status == 403


def test_allow_list_takes_the_machines_names_and_addresses_not_others() -> None:
    hosts = HostAllowList("0.0.0.0", ["Dock-3.Example."])
    assert hosts.allows(None)  # HTTP/1.0 tools send none; browsers always do
    assert hosts.allows(f"{socket.gethostname()}:9108")
    assert hosts.allows("dock-3.example:9108")
    assert hosts.allows("127.0.0.1:9108")
    assert hosts.allows("127.5.6.7")  # loopback
    assert not hosts.allows("0.0.0.0:9108")
    assert not hosts.allows("192.0.2.1:9108")  # TEST-NET: not an address of this machine
    assert not hosts.allows("evil.example:9108")
    assert not hosts.allows("")
    listened = HostAllowList("192.0.2.7")
    assert listened.allows("192.0.2.7:9108")


def test_console_hosts_from_the_config() -> None:
    config = parse_config(
        {
            "gateway": {"id": "dock-3", "site": "milan-returns"},
            "health": {"listen": "0.0.0.0:9108"},
            "console": {"password_env": "X", "hosts": ["dock-3.example", "[2001:db8::7]"]},
        }
    )
    hosts = console_hosts(config)
    assert hosts.allows("dock-3.example")
    assert hosts.allows("[2001:db8::7]:9108")
    assert not hosts.allows("evil.example")


# -- the login throttle --------------------------------------------------------------------------


async def _guess_with_body_later(
    server: Server, sources: list[str], refused: int
) -> list[tuple[int, bool]]:
    """One wrong guess per source: all headers first, then the bodies; (status, before body).

    Waits until the server has refused `refused` of them (on a loaded machine the headers take a
    while to be handled), then sends the bodies of those it has not answered.
    """
    body = json.dumps({"user": "mallory", "password": "guess"}).encode()
    head = server.head(
        "POST", "/login", headers={"Content-Type": "application/json"}, length=len(body)
    )
    connections = [await server.open(source) for source in sources]
    for _, writer in connections:
        writer.write(head + b"\r\n")
        await writer.drain()
    throttled = server.console.counters["logins_throttled"]
    for _ in range(200):
        if server.console.counters["logins_throttled"] - throttled >= refused:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # for the refusals to cross loopback
    results: list[tuple[int, bool]] = []
    for reader, writer in connections:
        try:
            # Answered already? Then the server judged without waiting for the body.
            early = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=0.02)
        except TimeoutError:
            writer.write(body)
            reply = await read_reply(reader, writer)
            results.append((reply.status, False))
        else:
            results.append((int(early.split(b" ", 2)[1]), True))
            writer.write(body)  # the attacker sends it anyway; the answer was given without it
            await asyncio.wait_for(reader.read(), timeout=10)
            writer.close()
            await writer.wait_closed()
    return results


async def test_guesses_sent_headers_first_are_counted_before_their_bodies() -> None:
    async with serving(login_required=True) as server:
        results = await _guess_with_body_later(
            server, ["127.0.0.1"] * 40, refused=40 - LOGIN_FAILURES_MAX
        )
        judged = [status for status, early in results if not early]
        refused = [status for status, early in results if early]
        assert judged == [401] * LOGIN_FAILURES_MAX
        assert refused == [429] * (40 - LOGIN_FAILURES_MAX)
        assert server.console.counters["logins_failed"] == LOGIN_FAILURES_MAX
        # The right password is refused too until the minute is over: the address is spent.
        reply = await server.login()
        assert reply.status == 429
        assert 1 <= int(reply.header("Retry-After") or "0") <= 60


async def test_guesses_from_many_addresses_meet_a_site_ceiling_a_known_address_passes() -> None:
    async with serving(login_required=True) as server:
        # A technician signs in from 127.0.0.200 first: the gateway knows that address now.
        assert (
            await server.send(
                "POST",
                "/login",
                headers={"Content-Type": "application/json"},
                body=json.dumps({"user": "ana", "password": PASSWORD}).encode(),
                source="127.0.0.200",
            )
        ).status == 200
        sources = [f"127.0.1.{n}" for n in range(1, 41)]  # all of 127/8 is this machine
        results = await _guess_with_body_later(server, sources, refused=40 - (SITE_GUESSES_MAX - 1))
        statuses = sorted(status for status, _ in results)
        # One slot went to the technician's own sign-in, inside the same minute.
        assert statuses.count(401) == SITE_GUESSES_MAX - 1
        assert statuses.count(429) == 40 - (SITE_GUESSES_MAX - 1)
        assert all(early for status, early in results if status == 429)
        # A stranger waits (at most a minute); the technician's known address still gets in.
        assert (await server.login()).status == 429
        reply = await server.send(
            "POST",
            "/login",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"user": "ana", "password": PASSWORD}).encode(),
            source="127.0.0.200",
        )
        assert reply.status == 200


# -- malformed CSRF token ------------------------------------------------------------------------


async def test_non_ascii_csrf_token_from_a_signed_in_browser_is_403() -> None:
    async with serving(login_required=True) as server:
        signed_in = await server.login()
        assert signed_in.status == 200
        cookie = signed_in.session()
        csrf = signed_in.json()["csrf"]
        headers = {"Content-Type": "application/json", "Cookie": f"{SESSION_COOKIE}={cookie}"}
        body = b'{"reader": "door-3-portal", "name": "test-low"}'
        for token in ("é".encode(), "€".encode(), b"\xff\xfe", csrf[:-1].encode() + "é".encode()):
            reply = await server.send(
                "POST",
                "/console/api/profiles/check",
                headers=headers,
                raw_headers=b"X-CSRF-Token: " + token + b"\r\n",
                body=body,
            )
            assert reply.status == 403, token
            assert "CSRF" in reply.json()["error"]
        reply = await server.send(
            "POST",
            "/console/api/profiles/check",
            headers={**headers, "X-CSRF-Token": csrf},
            body=body,
        )
        assert reply.status == 200


async def test_a_lone_surrogate_password_is_a_wrong_password_not_a_crash() -> None:
    async with serving(login_required=True) as server:
        reply = await server.send(
            "POST",
            "/login",
            headers={"Content-Type": "application/json"},
            body=b'{"user": "x", "password": "\\ud800"}',
        )
        assert reply.status == 401


# -- headers against framing, sniffing and inline script -----------------------------------------


async def test_every_response_forbids_framing_sniffing_and_inline_script() -> None:
    for login_required in (False, True):
        async with serving(login_required=login_required) as server:
            paths = ["/", "/login", "/static/console.js", "/healthz", "/metrics", "/nowhere"]
            for path in paths:
                reply = await server.send("GET", path)
                assert reply.status in (200, 303, 401, 404), path
                csp = reply.header("Content-Security-Policy") or ""
                assert "default-src 'self'" in csp, path
                assert "frame-ancestors 'none'" in csp, path
                assert "unsafe-inline" not in csp, path
                assert reply.header("X-Frame-Options") == "DENY", path
                assert reply.header("X-Content-Type-Options") == "nosniff", path
                assert reply.header("Referrer-Policy") == "no-referrer", path
            page = (await server.send("GET", "/" if not login_required else "/login")).body
            # Nothing inline for the CSP to refuse: scripts by file, no handlers, no style.
            assert not re.search(rb"<script(?![^>]*\bsrc=)", page)
            assert not re.search(rb"\son[a-z]+=", page)
            assert b"<style" not in page
            assert b" style=" not in page


# -- HTTPS ---------------------------------------------------------------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl not installed: scripts/test installs it")
    cert, key = folder / "console.crt", folder / "console.key"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *(
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=dock-3",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ),
            *("-addext", "subjectAltName=DNS:dock-3,DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_https_with_a_self_signed_certificate_and_a_secure_cookie(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = _free_port()
    config = parse_config(
        {
            "gateway": {"id": "dock-3", "site": "milan-returns", "state_dir": str(tmp_path)},
            "health": {"listen": f"127.0.0.1:{port}"},
            "console": {"tls_cert": cert.name, "tls_key": key.name},
        },
        base_dir=tmp_path,
    )
    server_tls = console_tls(config)
    assert server_tls is not None
    client_tls = ssl.create_default_context(cafile=str(cert))  # verifies name and chain
    async with serving(login_required=True, tls=(server_tls, client_tls), port=port) as server:
        reply = await server.login()
        assert reply.status == 200
        (cookie,) = [c for c in reply.cookies() if c.startswith(SESSION_COOKIE)]
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= attributes
        # No clear text on that port: an HTTP request gets no HTTP answer.
        plain = Server(server.port, server.console)
        with pytest.raises((ValueError, IndexError, ConnectionError)):
            await plain.send("GET", "/healthz")
        # The CLI (`gateway status`) reaches it by https, trusting exactly that certificate.
        health = await asyncio.to_thread(_get_health, config)
        assert health is not None
        assert health["healthy"] is True
    # A certificate that does not load is a config error naming the key.
    key.write_text("not a key", encoding="utf-8")
    with pytest.raises(Exception, match=r"console\.tls_cert"):
        console_tls(config)


# -- sessions ------------------------------------------------------------------------------------


async def test_cookieless_requests_do_not_evict_an_open_page() -> None:
    async with serving() as server:
        cookie, csrf = await server.page()
        headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
        assert (await server.send("GET", "/console/api/state", headers=headers)).status == 200
        # What another web site can make the browser send (the cookie is SameSite=Strict).
        for _ in range(2 * SESSIONS_MAX):
            assert (await server.send("GET", "/")).status == 200
        for _ in range(50):
            assert (await server.send("GET", "/console/api/state")).status == 200
        assert len(server.console.sessions) == 1
        change = {**headers, "X-CSRF-Token": csrf, "Content-Type": "application/json"}
        reply = await server.send(
            "POST",
            "/console/api/profiles/check",
            headers=change,
            body=b'{"reader": "door-3-portal", "name": "test-low"}',
        )
        assert reply.status == 200
