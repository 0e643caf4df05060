"""What the console's routes answer with: JSON, pages from templates, cookies, security headers."""

from __future__ import annotations

import html
import json
import string
from importlib import resources
from typing import Any

from aiohttp import web

from gateway.console.auth import SESSION_COOKIE, SESSION_IDLE_S, Session

SESSION_KEY = web.RequestKey("console.session", Session)


NO_STORE = {"Cache-Control": "no-store"}


def package_dir(name: str) -> str:
    return str(resources.files("gateway.console") / name)


def template(name: str) -> string.Template:
    return string.Template(
        (resources.files("gateway.console") / "templates" / name).read_text(encoding="utf-8")
    )


def login_form(message: str, user: str, status: int = 200) -> web.Response:
    page = template("login.html").substitute(message=html.escape(message), user=html.escape(user))
    return web.Response(text=page, content_type="text/html", status=status, headers=NO_STORE)


def set_cookie(response: web.StreamResponse, session: Session, *, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        httponly=True,
        samesite="Strict",
        secure=secure,
        path="/",
        max_age=int(SESSION_IDLE_S),
    )


CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


async def security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    # On every response, errors and static files included: no framing (click-jacking of
    # Apply), no script but the page's own file, no MIME sniffing, no URL leaked in Referer.
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def as_request(choice: object) -> dict[str, Any]:
    """A trial's A or B as `_requested` takes it: a profile's name, or a profile as JSON."""
    if isinstance(choice, dict):
        return {"profile": choice}
    return {"name": choice}


async def body_of(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **NO_STORE})


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, default=str),
        status=status,
        content_type="application/json",
        headers=NO_STORE,
    )


def error(status: int, message: str) -> web.Response:
    return json_response({"ok": False, "error": message}, status)
