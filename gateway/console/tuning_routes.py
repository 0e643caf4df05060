"""The tuning page of one reader and its A/B trial of two profiles, as routes of the console.

The console's guard (sessions, CSRF, same origin) runs before these as before every route.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.console.auth import Session, clean_user
from gateway.console.responses import (
    NO_STORE,
    SESSION_KEY,
    as_request,
    body_of,
    json_response,
    template,
)
from gateway.console.source import ConsoleSource
from gateway.console.trial import Trial
from gateway.console.tuning import reader_tuning
from gateway.errors import ConfigError, InputError
from gateway.logs import get_logger
from gateway.profiles import Profile

_log = get_logger("console")


class TuningRoutes:
    """`/console/tuning/{reader}`, its JSON, and the trial's state, start and stop."""

    def __init__(
        self,
        source: ConsoleSource,
        trial: Trial,
        requested: Callable[[dict[str, Any]], Profile],
        counters: Counter[str],
        *,
        login_required: bool,
        parked_after_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self.trial = trial
        self._requested = requested
        self.counters = counters
        self._login_required = login_required
        self._parked_after_s = parked_after_s
        self._clock = clock

    def install(self, app: web.Application) -> None:
        """Add the tuning page, its data and the trial's routes."""
        app.router.add_get("/console/tuning/{reader}", self._tuning_page)
        app.router.add_get("/console/api/tuning/{reader}", self._tuning)
        app.router.add_get("/console/api/trial", self._trial_state)
        app.router.add_post("/console/api/trial/start", self._trial_start)
        app.router.add_post("/console/api/trial/stop", self._trial_stop)

    async def _tuning_page(self, request: web.Request) -> web.Response:
        session: Session = request[SESSION_KEY]
        reader = request.match_info["reader"]
        page = template("tuning.html").substitute(
            csrf=html.escape(session.csrf),
            user=html.escape(session.user),
            login_required="true" if self._login_required else "false",
            reader=html.escape(reader),
            parked_after_s=f"{self._parked_after_s:g}",
        )
        return web.Response(text=page, content_type="text/html", headers=NO_STORE)

    async def _tuning(self, request: web.Request) -> web.Response:
        reader = request.match_info["reader"]
        return json_response(
            reader_tuning(
                reader,
                self._source.tags.history,
                self._source.tags.all(),
                self._source.activity.entries(),
                self._source.profiles_in_force().get(reader),
                now_s=self._clock(),
                parked_after_s=self._parked_after_s,
            )
        )

    async def _trial_state(self, _request: web.Request) -> web.Response:
        state = self.trial.state
        return json_response({"running": self.trial.running, "trial": state and state.as_json()})

    async def _trial_start(self, request: web.Request) -> web.Response:
        session: Session = request[SESSION_KEY]
        body = await body_of(request)
        user = session.user
        if not self._login_required:
            user = clean_user(str(body.get("requested_by") or "")) or "console"
        try:
            a = self._requested(as_request(body.get("a")))
            b = self._requested(as_request(body.get("b")))
            phase_s = float(body.get("phase_s") or 0)
            rounds = int(body.get("rounds") or 0)
        except ConfigError as exc:
            return json_response({"ok": False, "error": f"{exc.key}: {exc.reason}"}, 400)
        except (TypeError, ValueError):
            return json_response({"ok": False, "error": "phase_s and rounds are numbers"}, 400)
        try:
            state = self.trial.start(
                str(body.get("reader") or ""),
                a,
                b,
                phase_s=phase_s,
                rounds=rounds,
                requested_by=user,
                client=request.remote,
                parked_after_s=self._parked_after_s,
            )
        except InputError as exc:
            return json_response({"ok": False, "error": exc.reason}, 409)
        self.counters["trials"] += 1
        _log.info("console_trial_started", reader=state.reader, a=state.a, b=state.b, user=user)
        return json_response({"ok": True, "trial": state.as_json()})

    async def _trial_stop(self, _request: web.Request) -> web.Response:
        return json_response({"ok": self.trial.stop()})
