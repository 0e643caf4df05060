"""The console's routes on the gateway's HTTP server: the page, its JSON API, the live stream.

`Console` is an `HttpExtension` of `HealthServer`, which has already refused any request naming a
`Host` it does not know (DNS rebinding). The console's guard runs before every route: `/healthz`,
`/metrics` and static files are open; on a non-loopback listen everything else needs a signed-in
session; every change (any POST, the actions included) needs the session's CSRF token, and a
request from another origin is refused. On loopback the page gets a session without a password
(the machine's own users are trusted, as they were with `POST /actions`), but still needs the token,
so another web site open in the technician's browser cannot post to the gateway. Every response
carries a Content-Security-Policy without inline script and may not be framed.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.console.auth import (
    CSRF_HEADER,
    SESSION_COOKIE,
    LoginThrottle,
    Session,
    Sessions,
    clean_user,
    password_matches,
)
from gateway.console.feed import DEFAULT_INTERVAL_S, LiveFeed
from gateway.console.lookup import lookup
from gateway.console.responses import (
    NO_STORE,
    SESSION_KEY,
    body_of,
    error,
    json_response,
    login_form,
    package_dir,
    security_headers,
    see_other,
    set_cookie,
    template,
)
from gateway.console.source import ConsoleSource
from gateway.console.tags import matches
from gateway.console.trial import Trial
from gateway.console.tuning import DEFAULT_PARKED_AFTER_S
from gateway.console.tuning_routes import TuningRoutes
from gateway.errors import ConfigError, InputError
from gateway.logs import get_logger
from gateway.profiles import (
    Profile,
    diff_profiles,
    find_profile,
    model_limit_problems,
    parse_profile,
)
from gateway.runtime.health import USER_KEY

_log = get_logger("console")
_OPEN_PATHS = frozenset({"/healthz", "/metrics", "/login", "/favicon.ico"})
_PROFILE_TEXT_MAX = 64 * 1024
_FEED_KEY = web.AppKey("console.feed", asyncio.Task[None])
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Console:
    """The technicians' page and API; give it the daemon's view and whether a login is needed."""

    def __init__(
        self,
        source: ConsoleSource,
        *,
        login_required: bool,
        password: str | None,
        update_interval_s: float = DEFAULT_INTERVAL_S,
        parked_after_s: float = DEFAULT_PARKED_AFTER_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if login_required and not password:
            raise ConfigError("console.password_env", "a login is required but no password is set")
        self._source = source
        self._login_required = login_required
        self._password = password or ""
        self._parked_after_s = parked_after_s
        self._clock = clock
        self.trial = Trial(source, clock=clock)
        self.feed = LiveFeed(source, update_interval_s)
        self.sessions = Sessions()
        self._throttle = LoginThrottle()
        self.counters: Counter[str] = Counter()

    @property
    def tags_in_view(self) -> int:
        """Tags in the tags-in-view table now."""
        return len(self._source.tags)

    def install(self, app: web.Application, registry: CollectorRegistry) -> None:
        """Add the guard, the routes, the feed task and the console's metrics."""
        app.middlewares.append(self._guard)
        app.on_response_prepare.append(security_headers)
        app.router.add_get("/", self._index)
        app.router.add_get("/login", self._login_page)
        app.router.add_post("/login", self._login)
        app.router.add_post("/logout", self._logout)
        app.router.add_static("/static/", package_dir("static"), show_index=False)
        app.router.add_get("/console/stream", self._stream)
        app.router.add_get("/console/api/state", self._state)
        app.router.add_get("/console/api/tags", self._tags)
        app.router.add_get("/console/api/profiles", self._profiles)
        app.router.add_post("/console/api/profiles/check", self._check_profile)
        app.router.add_post("/console/api/profiles/apply", self._apply_profile)
        app.router.add_get("/console/api/profiles/history", self._history)
        app.router.add_get("/console/api/expected", self._expected)
        TuningRoutes(
            self._source,
            self.trial,
            self._requested,
            self.counters,
            login_required=self._login_required,
            parked_after_s=self._parked_after_s,
            clock=self._clock,
        ).install(app)
        app.cleanup_ctx.append(self._run_feed)
        app.on_shutdown.append(self._end_streams)
        registry.register(_ConsoleCollector(self))

    # -- the guard -----------------------------------------------------------------------------

    @web.middleware
    async def _guard(  # noqa: PLR0911 - one early answer per refusal reads clearer than nesting
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        path = request.path
        change = request.method not in ("GET", "HEAD", "OPTIONS")
        if change and not _same_origin(request):
            self.counters["cross_origin_refused"] += 1
            return error(403, "cross-origin request refused")
        if path in _OPEN_PATHS or path.startswith("/static/"):
            return await handler(request)
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None and path.startswith("/actions/") and not self._login_required:
            # The local CLI on a loopback-only port. A browser cannot send a JSON body to
            # another origin without a CORS preflight, which this server never grants.
            if request.content_type != "application/json":
                return error(415, "send application/json")
            return await handler(request)
        if session is None:
            return await self._without_session(request, handler, change=change)
        if change and not session.csrf_ok(request.headers.get(CSRF_HEADER)):
            self.counters["csrf_refused"] += 1
            _log.warning("console_csrf_refused", path=path[:64], address=request.remote)
            return error(403, "missing or wrong CSRF token")
        return await self._with_session(request, handler, session)

    async def _without_session(
        self, request: web.Request, handler: Handler, *, change: bool
    ) -> web.StreamResponse:
        if self._login_required:
            if request.method == "GET" and request.path == "/":
                raise web.HTTPSeeOther("/login")
            return error(401, "sign in first")
        if change:
            self.counters["csrf_refused"] += 1
            return error(403, "no session: load the page first")
        if not _is_page(request.path):
            return await handler(request)  # a read on loopback: no session to keep for it
        # Only the page makes a session, and an unproven one until its cookie comes back, so
        # cookieless requests from anywhere cannot push out the sessions of open pages.
        session = self.sessions.create("local", request.remote or "?", signed_in=False)
        response = await self._with_session(request, handler, session)
        set_cookie(response, session, secure=request.secure)
        return response

    async def _with_session(
        self, request: web.Request, handler: Handler, session: Session
    ) -> web.StreamResponse:
        request[SESSION_KEY] = session
        if self._login_required:
            request[USER_KEY] = session.user
        return await handler(request)

    # -- pages ---------------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        session: Session = request[SESSION_KEY]
        state = self.feed.state()
        readers = "".join(
            "<tr data-reader='{0}'><td><a href='/console/tuning/{0}'>{0}</a></td><td>{1}</td>"
            "<td class='state state-{2}'>{2}</td><td>{3}</td><td class='rates'></td>"
            "<td>{4}</td><td>{5}</td><td>{6}</td></tr>".format(
                *(
                    html.escape(str(r.get(k) if r.get(k) is not None else "-"))
                    for k in ("reader", "kind", "state", "profile", "reconnects", "bad_input", "io")
                )
            )
            for r in state["readers"]
        )
        llrp = sorted(self._source.profiles_in_force())
        page = template("index.html").substitute(
            csrf=html.escape(session.csrf),
            user=html.escape(session.user),
            login_required="true" if self._login_required else "false",
            reader_rows=readers,
            reader_options="".join(f"<option>{html.escape(r)}</option>" for r in llrp),
            profile_options="".join(
                f"<option>{html.escape(name)}</option>" for name, _ in self._available()
            ),
            interval_ms=int(self.feed.interval_s * 1000),
        )
        return web.Response(text=page, content_type="text/html", headers=NO_STORE)

    async def _login_page(self, request: web.Request) -> web.Response:
        if not self._login_required:
            raise web.HTTPSeeOther("/")
        return login_form("", request.query.get("user", ""))

    async def _login(self, request: web.Request) -> web.StreamResponse:
        address = request.remote or "?"
        wants_json = request.content_type == "application/json"
        if not self._login_required:
            return error(404, "no login on a loopback-only console")
        # The attempt is counted now, before its body is read: guesses sent as headers first and
        # bodies later are refused here just as those sent one after another.
        wait_s = self._throttle.reserve(address)
        if wait_s is not None:
            self.counters["logins_throttled"] += 1
            _log.warning("console_login_throttled", address=address)
            refused = error(429, f"too many failed logins: wait {wait_s:.0f} s")
            refused.headers["Retry-After"] = str(int(wait_s))
            refused.force_close()  # and leave the unread body unread: no lingering for it
            return refused
        if wants_json:
            try:
                body = await request.json()
            except ValueError:
                return error(400, "not JSON")
            body = body if isinstance(body, dict) else {}
        else:
            body = dict(await request.post())
        user = clean_user(str(body.get("user") or ""))
        presented = str(body.get("password") or "")
        if not user or not password_matches(presented, self._password):
            self.counters["logins_failed"] += 1
            _log.warning("console_login_failed", address=address, user=user)
            if wants_json:
                return error(401, "wrong user or password")
            return login_form("Wrong user or password.", user, status=401)
        self._throttle.succeeded(address)
        self.counters["logins"] += 1
        session = self.sessions.create(user, address, signed_in=True)
        _log.info("console_login", address=address, user=user)
        response: web.StreamResponse
        if wants_json:
            response = json_response({"ok": True, "user": user, "csrf": session.csrf})
        else:
            response = see_other("/")
        set_cookie(response, session, secure=request.secure)
        return response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[SESSION_KEY]
        self.sessions.drop(session.token)
        response = see_other("/login" if self._login_required else "/")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    # -- live ----------------------------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        subscriber = self.feed.subscribe(request.query.get("filter", ""))
        try:
            await response.write(b"retry: 2000\n\n")
            while True:
                message = await subscriber.queue.get()
                if message is None:
                    break
                await response.write(message)
        except (ConnectionResetError, ConnectionError):
            pass  # the page went away
        finally:
            self.feed.unsubscribe(subscriber)
        return response

    async def _state(self, _request: web.Request) -> web.Response:
        return json_response(self.feed.state())

    async def _tags(self, request: web.Request) -> web.Response:
        wanted = request.query.get("filter", "").strip()
        rows = [list(t.row()) for t in self._source.tags.all() if matches(t, wanted)]
        return json_response({"in_view": len(self._source.tags), "rows": rows})

    async def _run_feed(self, _app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self.feed.run(), name="console-feed")
        task.add_done_callback(_feed_ended)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self.trial.close()

    async def _end_streams(self, _app: web.Application) -> None:
        self.feed.close()

    # -- profiles ------------------------------------------------------------------------------

    async def _profiles(self, _request: web.Request) -> web.Response:
        in_force = {
            reader: _profile_summary(profile)
            for reader, profile in sorted(self._source.profiles_in_force().items())
        }
        available = [
            {"name": name, **(_profile_summary(p) if isinstance(p, Profile) else {"error": p})}
            for name, p in self._available()
        ]
        return json_response({"in_force": in_force, "available": available})

    async def _check_profile(self, request: web.Request) -> web.Response:
        body = await body_of(request)
        reader = str(body.get("reader") or "")
        try:
            profile = self._requested(body)
        except ConfigError as exc:
            return json_response({"ok": False, "errors": [f"{exc.key}: {exc.reason}"]})
        current = self._source.profiles_in_force().get(reader)
        changes = diff_profiles(current, profile) if current is not None else []
        return json_response(
            {
                "ok": True,
                "errors": [],
                "profile": _profile_summary(profile),
                "reader": reader,
                "in_force": None if current is None else _profile_summary(current),
                "changes": [list(c) for c in changes],
            }
        )

    async def _apply_profile(self, request: web.Request) -> web.Response:
        session: Session = request[SESSION_KEY]
        body = await body_of(request)
        try:
            profile = self._requested(body)
        except ConfigError as exc:
            return json_response(
                {"ok": False, "outcome": "invalid", "reason": f"{exc.key}: {exc.reason}"}
            )
        user = session.user
        if not self._login_required:
            user = clean_user(str(body.get("requested_by") or "")) or "console"
        self.counters["profile_applies"] += 1
        try:
            result = await self._source.apply_profile(
                {
                    "reader": str(body.get("reader") or ""),
                    "profile": profile.model_dump(mode="json"),
                    "requested_by": user,
                    "source": "console",
                    "client": request.remote,
                }
            )
        except InputError as exc:
            return json_response({"ok": False, "outcome": "invalid", "reason": exc.reason})
        return json_response(result)

    async def _history(self, request: web.Request) -> web.Response:
        reader = request.query.get("reader")
        entries = [
            e
            for e in await self._source.profile_history()
            if reader in (None, "") or e.get("reader") == reader
        ]
        return json_response({"history": list(reversed(entries))[:200]})

    def _requested(self, body: dict[str, Any]) -> Profile:
        proposed = body.get("profile")
        if isinstance(proposed, dict):
            # A tuning suggestion's profile, sent back as the page got it.
            return parse_profile(proposed, source="profile")
        text = body.get("text")
        if isinstance(text, str) and text.strip():
            if len(text) > _PROFILE_TEXT_MAX:
                raise ConfigError("profile", f"longer than {_PROFILE_TEXT_MAX} characters")
            try:
                raw = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError("profile", f"not valid TOML: {exc}") from exc
            except RecursionError as exc:
                raise ConfigError("profile", "not valid TOML: nested too deeply") from exc
            return parse_profile(raw, source="profile")
        name = body.get("name")
        if not isinstance(name, str) or not name.replace("-", "").isalnum():
            raise ConfigError("profile", "choose a profile or paste one")
        return find_profile(name, self._source.profile_dir())

    def _available(self) -> list[tuple[str, Profile | str]]:
        found: list[tuple[str, Profile | str]] = []
        for path in sorted(self._source.profile_dir().glob("*.toml"))[:500]:
            try:
                profile = find_profile(path.stem, path.parent)
            except ConfigError as exc:
                found.append((path.stem, f"{exc.key}: {exc.reason}"))
                continue
            found.append((path.stem, profile))
        return found

    # -- expected returns ----------------------------------------------------------------------

    async def _expected(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "")
        if not query.strip():
            return error(400, "give an RMA, an EPC, or a GTIN and serial")
        # The registry is in the buffer: the source reads the rows this query can concern.
        registry = await self._source.expected_returns(query)
        return json_response(lookup(query, registry, self._source.activity, self._source.tags))


def _feed_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # The page goes stale but the daemon runs on; say so loudly rather than die.
        _log.error("console_feed_failed", error=repr(task.exception()))


class _ConsoleCollector(Collector):
    """The console's counters in /metrics: logins, refusals, pages connected, tags in view."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def collect(self) -> Iterator[Metric]:
        console = self._console
        for key, help_text in (
            ("logins", "Successful console logins"),
            ("logins_failed", "Failed console logins (wrong user or password)"),
            ("logins_throttled", "Console logins refused because of too many failures"),
            ("csrf_refused", "Console changes refused for a missing or wrong CSRF token"),
            ("cross_origin_refused", "Console changes refused because they came from elsewhere"),
            ("profile_applies", "Profile changes requested from the console"),
            ("trials", "A/B trials of two profiles started from the console"),
        ):
            counter = CounterMetricFamily(f"gateway_console_{key}", help_text)
            counter.add_metric([], float(console.counters[key]))
            yield counter
        for key, help_text, value in (
            ("sessions", "Console sessions open", len(console.sessions)),
            (
                "sessions_pending",
                "Anonymous console sessions whose cookie has not come back",
                console.sessions.pending,
            ),
            ("feed_clients", "Console pages receiving the live feed", console.feed.clients),
            ("tags_in_view", "Tags in the console's tags-in-view table", console.tags_in_view),
        ):
            gauge = GaugeMetricFamily(f"gateway_console_{key}", help_text)
            gauge.add_metric([], float(value))
            yield gauge


def _is_page(path: str) -> bool:
    return path == "/" or path.startswith("/console/tuning/")


def _same_origin(request: web.Request) -> bool:
    # Host is already one of the gateway's own names (HealthServer refuses the others), so an
    # Origin equal to it is this console, not a rebound name.
    origin = request.headers.get("Origin")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site != "same-origin":
        return False  # the browser says so outright: cross-site, same-site or typed
    if origin is None:
        # Browsers send Origin on every cross-site POST; tools (the CLI, curl) send none.
        return True
    if origin == "null":
        # The console's own forms (sign in, sign out) post with Origin: null, because its pages
        # say Referrer-Policy: no-referrer; the browser still vouches in Sec-Fetch-Site.
        return fetch_site == "same-origin"
    return origin == f"{request.scheme}://{request.host}"


def _profile_summary(profile: Profile) -> dict[str, Any]:
    return {
        "name": profile.name,
        "model": profile.model,
        "version": profile.version,
        "description": profile.description,
        "antennas": [
            {"port": a.port, "power_dbm": a.power_dbm, "enabled": a.enabled}
            for a in profile.antennas
        ],
        "reader_mode": profile.reader.reader_mode,
        "session": profile.reader.session,
        "problems": [f"{k}: {r}" for k, r in model_limit_problems(profile)],
    }
