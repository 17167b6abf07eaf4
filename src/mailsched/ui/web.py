"""What every dashboard route shares: the templates, the session lookup, the
security headers and the form helpers.

Every answer goes through :func:`secured`, which adds the security headers; no
route raises ``HTTPException``, whose JSON answer would skip them. Forms are
read from the raw body (``application/x-www-form-urlencoded``), which needs no
multipart parser.
"""

from __future__ import annotations

import hmac
import importlib.resources
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mailsched.store.ui_sessions import UiSession
from mailsched.ui.progress import when
from mailsched.ui.sessions import Sessions

HERE = Path(str(importlib.resources.files("mailsched.ui")))
COOKIE = "mailsched_session"

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages show one user's data: no shared cache may keep them.
    "Cache-Control": "no-store",
}


def secured(response: Response) -> Response:
    """``response`` with the dashboard's security headers."""
    response.headers.update(HEADERS)
    return response


class Pages:
    """The services every page needs: sessions, templates, the clock and whether
    the cookie is ``Secure`` (an https public URL)."""

    def __init__(self, sessions: Sessions, public_url: str, clock: Callable[[], datetime]) -> None:
        self.sessions = sessions
        self.clock = clock
        self.secure = public_url.lower().startswith("https://")
        #: The deployment's rate window (the chart's limit line).
        self.window = timedelta(hours=1)
        self._templates = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self._templates.globals["when"] = when

    def page(self, name: str, status_code: int = 200, **context: Any) -> Response:
        """A rendered template with the security headers."""
        html = self._templates.get_template(name).render(**context)
        return secured(HTMLResponse(html, status_code=status_code))

    def fragment(self, name: str, **context: Any) -> str:
        """A rendered template, as text (a part of a page)."""
        return self._templates.get_template(name).render(**context)

    async def signed_in(self, request: Request) -> UiSession | None:
        """The request's live session, if any."""
        return await self.sessions.find(request.cookies.get(COOKIE))

    def forbidden(self) -> Response:
        """The answer to a form without its session's CSRF token."""
        return self.page("forbidden.html", 403, session=None)

    def not_found(self, session: UiSession | None) -> Response:
        """The answer to anything missing, or another user's."""
        return self.page("not_found.html", 404, session=session)


def home() -> Response:
    """A redirect to ``/ui/``: the sign-in form, or the campaign list."""
    return secured(RedirectResponse("/ui/", status_code=303))


def see_other(url: str) -> Response:
    """A redirect after a form's POST."""
    return secured(RedirectResponse(url, status_code=303))


async def form_fields(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def csrf_ok(session: UiSession, given: str | None) -> bool:
    """Whether a form carries its session's CSRF token."""
    return given is not None and hmac.compare_digest(session.csrf.encode(), given.encode())
