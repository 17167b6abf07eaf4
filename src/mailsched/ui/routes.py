"""The dashboard's routes under ``/ui/``: sign in and out, the campaign list, a
campaign's page, the progress feed for the list's script, and the static files.

Every answer goes through :func:`_secured`, which adds the security headers; no
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

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mailsched.domain.model import CampaignStatus, DeliveryStatus
from mailsched.errors import Conflict, NotFound
from mailsched.producer.auth import Authenticator
from mailsched.producer.campaigns import Campaigns
from mailsched.store.db import Database
from mailsched.store.ui_sessions import UiSession
from mailsched.ui import campaign_page
from mailsched.ui.progress import progress, when
from mailsched.ui.sessions import LIFETIME, Sessions

_HERE = Path(str(importlib.resources.files("mailsched.ui")))
COOKIE = "mailsched_session"
PAGE_SIZE = 20
#: The most campaigns one progress request may ask about (a page holds 20).
MAX_IDS = 100

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
_STATIC = {"ui.css": "text/css", "ui.js": "text/javascript"}
#: How many pages back Previous remembers.
_MAX_TRAIL = 50
_STATUSES = {s.value for s in CampaignStatus}


def _secured(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def ui_routes(
    campaigns: Campaigns,
    auth: Authenticator,
    db: Database,
    public_url: str,
    clock: Callable[[], datetime],
    *,
    window: timedelta = timedelta(hours=1),
    on_resumed: Callable[[], None] | None = None,
) -> APIRouter:
    """The dashboard, over the API's own services. ``public_url`` decides whether the
    cookie is ``Secure`` (an https public URL); ``window`` is the deployment's rate
    window (the chart's limit line); ``on_resumed`` wakes the dispatcher after a
    resume or a retry, as the API's routes do."""
    pages = _Pages(campaigns, Sessions(db, auth, clock), db, public_url, clock)
    controls = _Controls(pages, campaigns, on_resumed or (lambda: None))
    pages.window = window
    router = APIRouter(prefix="/ui", include_in_schema=False)
    router.add_api_route("", pages.bare, methods=["GET"])
    router.add_api_route("/", pages.index, methods=["GET"])
    router.add_api_route("/sign-in", pages.sign_in, methods=["POST"])
    router.add_api_route("/sign-out", pages.sign_out, methods=["POST"])
    router.add_api_route("/campaigns/{campaign_id}", pages.campaign, methods=["GET"])
    router.add_api_route("/campaigns/{campaign_id}/{action}", controls.act, methods=["POST"])
    router.add_api_route("/data/progress", pages.progress, methods=["GET"])
    router.add_api_route("/static/{name}", pages.static, methods=["GET"])
    return router


class _Pages:
    """The route handlers, sharing the services and the templates."""

    def __init__(
        self,
        campaigns: Campaigns,
        sessions: Sessions,
        db: Database,
        public_url: str,
        clock: Callable[[], datetime],
    ) -> None:
        self._campaigns = campaigns
        self._sessions = sessions
        self._db = db
        self._clock = clock
        self._secure = public_url.lower().startswith("https://")
        self.window = timedelta(hours=1)
        self._templates = Environment(
            loader=FileSystemLoader(str(_HERE / "templates")),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self._templates.globals["when"] = when

    def page(self, name: str, status_code: int = 200, **context: Any) -> Response:
        """A rendered template with the security headers."""
        return self._page(name, status_code, **context)

    def _page(self, name: str, status_code: int = 200, **context: Any) -> Response:
        html = self._templates.get_template(name).render(**context)
        return _secured(HTMLResponse(html, status_code=status_code))

    async def signed_in(self, request: Request) -> UiSession | None:
        """The request's live session, if any."""
        return await self._signed_in(request)

    async def _signed_in(self, request: Request) -> UiSession | None:
        return await self._sessions.find(request.cookies.get(COOKIE))

    async def bare(self) -> Response:
        return _home()

    async def index(
        self, request: Request, status: str = "", before: str = "", trail: str = ""
    ) -> Response:
        """The sign-in form, or once signed in the campaign list."""
        session = await self._signed_in(request)
        if session is None:
            return self._page("sign_in.html", error=None)
        chosen = CampaignStatus(status) if status in _STATUSES else None
        before_id = int(before) if before.isdigit() and before != "0" else None
        listing = await self._campaigns.listing(session.user_id, chosen, before_id, PAGE_SIZE)
        rows = await progress(
            self._campaigns,
            self._db,
            self._clock,
            session.user_id,
            [c.campaign_id for c in listing.items],
        )
        return self._page(
            "campaigns.html",
            session=session,
            rows=rows,
            statuses=list(CampaignStatus),
            chosen=chosen,
            pages=_Paging(before_id, trail, listing.next_cursor),
        )

    async def sign_in(self, request: Request) -> Response:
        """Exchange a key for a session cookie; a refused key sets nothing."""
        opened = await self._sessions.sign_in((await _form(request)).get("key", "").strip())
        if opened is None:
            return self._page("sign_in.html", 401, error="That API key is not valid.")
        response = _home()
        response.set_cookie(
            COOKIE,
            opened.token,
            max_age=int(LIFETIME.total_seconds()),
            path="/ui",
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )
        return response

    async def sign_out(self, request: Request) -> Response:
        """End the session: the form must carry the session's CSRF token."""
        session = await self._signed_in(request)
        if session is None or not _csrf_ok(session, (await _form(request)).get("csrf")):
            return self._page("forbidden.html", 403, session=None)
        await self._sessions.sign_out(session)
        response = _home()
        response.delete_cookie(
            COOKIE, path="/ui", secure=self._secure, httponly=True, samesite="strict"
        )
        return response

    async def campaign(
        self,
        request: Request,
        campaign_id: str,
        status: str = "",
        recipient: str = "",
        after: str = "",
        notice: str = "",
    ) -> Response:
        """One campaign: counts, chart, next sends, errors, deliveries and controls;
        another user's is as absent as a missing one."""
        session = await self._signed_in(request)
        if session is None:
            return _home()
        wanted = campaign_page.Filter.parse(status, recipient, after)
        try:
            page = await campaign_page.load(
                self._campaigns,
                self._db,
                session.user_id,
                int(campaign_id),
                wanted,
                self.window,
                self._clock(),
            )
        except (NotFound, ValueError):
            return self._page("not_found.html", 404, session=session)
        return self._page(
            "campaign.html",
            session=session,
            page=page,
            view=page.view,
            wanted=wanted,
            notice=_NOTICES.get(notice),
            statuses=list(DeliveryStatus),
        )

    async def progress(self, request: Request, ids: str = "") -> Response:
        """The list's numbers for ``ui.js``: only the caller's campaigns among ``ids``."""
        session = await self._signed_in(request)
        if session is None:
            return _secured(JSONResponse({"error": "not signed in"}, status_code=401))
        wanted = [int(i) for i in ids.split(",") if i.isdigit()][:MAX_IDS]
        rows = await progress(self._campaigns, self._db, self._clock, session.user_id, wanted)
        return _secured(JSONResponse({"campaigns": [row.as_json() for row in rows]}))

    async def static(self, name: str) -> Response:
        """The stylesheet and the script, from the package."""
        if name not in _STATIC:
            return self._page("not_found.html", 404, session=None)
        return _secured(FileResponse(_HERE / "static" / name, media_type=_STATIC[name]))


_NOTICES = {
    "pause": "Paused.",
    "resume": "Resumed.",
    "cancel": "Cancelled.",
    "retry-failed": "The failed deliveries will be sent again.",
    "conflict": "That is not possible in the campaign's current status.",
}


class _Controls:
    """Pause, Resume, Cancel and Retry failed: POST forms with the CSRF token, each
    calling the service method the API calls, then 303 back to the page."""

    def __init__(self, pages: _Pages, campaigns: Campaigns, on_resumed: Callable[[], None]) -> None:
        self._pages = pages
        self._campaigns = campaigns
        self._on_resumed = on_resumed

    async def act(self, request: Request, campaign_id: str, action: str) -> Response:
        session = await self._pages.signed_in(request)
        if session is None or not _csrf_ok(session, (await _form(request)).get("csrf")):
            return self._pages.page("forbidden.html", 403, session=None)
        if action not in campaign_page.CONTROLS or not campaign_id.isdigit():
            return self._pages.page("not_found.html", 404, session=session)
        user_id, ident = session.user_id, int(campaign_id)
        try:
            if action == "pause":
                await self._campaigns.pause(user_id, ident)
            elif action == "cancel":
                await self._campaigns.cancel(user_id, ident)
            elif action == "resume":
                await self._campaigns.resume(user_id, ident)
                self._on_resumed()
            else:
                await self._campaigns.retry_failed(user_id, ident)
                self._on_resumed()
        except NotFound:
            return self._pages.page("not_found.html", 404, session=session)
        except Conflict:
            action = "conflict"
        return _secured(RedirectResponse(f"/ui/campaigns/{ident}?notice={action}", 303))


class _Paging:
    """Next and Previous over a newest-first cursor that only goes back in time:
    ``trail`` carries the cursors of the pages before this one (0 is the first)."""

    def __init__(self, before: int | None, trail: str, next_cursor: str | None) -> None:
        earlier = [int(t) for t in trail.split(",") if t.isdigit()][-_MAX_TRAIL:]
        here = [*earlier, before or 0]
        self.next = None if next_cursor is None else (next_cursor, _joined(here))
        self.previous = (
            None
            if before is None
            else (str(earlier[-1]) if earlier else "0", _joined(earlier[:-1]))
        )


def _joined(cursors: list[int]) -> str:
    return ",".join(str(c) for c in cursors)


def _home() -> Response:
    return _secured(RedirectResponse("/ui/", status_code=303))


async def _form(request: Request) -> dict[str, str]:
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


def _csrf_ok(session: UiSession, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf.encode(), given.encode())
