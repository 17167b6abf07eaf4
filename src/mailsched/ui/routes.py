"""The dashboard's routes under ``/ui/``: sign in and out, the campaign list, a
campaign's page and its controls, the progress feed for the list's script, and the
static files; the new-campaign form (:mod:`mailsched.ui.compose`) and the
suppressions and webhooks pages (:mod:`mailsched.ui.lists`) are mounted beside them.
What the routes share is in :mod:`mailsched.ui.web`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from mailsched.domain.model import CampaignStatus, DeliveryStatus
from mailsched.domain.shaping import Shaping
from mailsched.errors import Conflict, Invalid, NotFound
from mailsched.producer.api import Limits
from mailsched.producer.auth import Authenticator
from mailsched.producer.campaigns import Campaigns
from mailsched.store.db import Database
from mailsched.ui import campaign_page, compose, lists, live
from mailsched.ui.progress import progress
from mailsched.ui.sessions import LIFETIME, Sessions, TooManySignIns
from mailsched.ui.web import (
    COOKIE,
    HEADERS,
    HERE,
    POLICY,
    Pages,
    csrf_ok,
    form_fields,
    home,
    secured,
    see_other,
)

__all__ = ["COOKIE", "HEADERS", "POLICY", "ui_routes"]

PAGE_SIZE = 20
#: The most campaigns one progress request may ask about (a page holds 20).
MAX_IDS = 100

_STATIC = {"ui.css": "text/css", "ui.js": "text/javascript"}
#: How many pages back Previous remembers.
_MAX_TRAIL = 50
_STATUSES = {s.value for s in CampaignStatus}


def ui_routes(
    campaigns: Campaigns,
    auth: Authenticator,
    db: Database,
    public_url: str,
    clock: Callable[[], datetime],
    *,
    window: timedelta = timedelta(hours=1),
    on_resumed: Callable[[], None] | None = None,
    allow_private_urls: bool = False,
    limits: Limits | None = None,
    shaping: Shaping | None = None,
) -> APIRouter:
    """The dashboard, over the API's own services. ``public_url`` decides whether the
    cookie is ``Secure`` (an https public URL); ``window`` is the deployment's rate
    window (the chart's limit line); ``on_resumed`` wakes the dispatcher after a
    create, a resume or a retry, as the API's routes do; ``allow_private_urls`` lets
    webhook endpoints be on private addresses, as the API's setting does; ``limits``
    bound a campaign made in the form as they bound the API's; ``shaping``'s groups
    are shown on each campaign's page."""
    pages = Pages(Sessions(db, auth, clock), public_url, clock)
    pages.window = window
    wake = on_resumed or (lambda: None)
    views = _Views(pages, campaigns, db, shaping or Shaping())
    controls = _Controls(pages, campaigns, wake)
    router = APIRouter(prefix="/ui", include_in_schema=False)
    router.add_api_route("", views.bare, methods=["GET"])
    router.add_api_route("/", views.index, methods=["GET"])
    router.add_api_route("/sign-in", views.sign_in, methods=["POST"])
    router.add_api_route("/sign-out", views.sign_out, methods=["POST"])
    # Before /campaigns/{campaign_id}, which would take "new" for an id.
    router.include_router(compose.compose_routes(pages, campaigns, wake, limits or Limits()))
    router.add_api_route("/campaigns/{campaign_id}", views.campaign, methods=["GET"])
    router.add_api_route("/campaigns/{campaign_id}/{action}", controls.act, methods=["POST"])
    router.add_api_route("/data/progress", views.progress, methods=["GET"])
    router.include_router(live.live_routes(pages, db))
    router.add_api_route("/static/{name}", views.static, methods=["GET"])
    router.include_router(lists.list_routes(pages, db, allow_private_urls=allow_private_urls))
    return router


class _Views:
    """The sign-in, list and campaign pages and their data."""

    def __init__(self, pages: Pages, campaigns: Campaigns, db: Database, shaping: Shaping) -> None:
        self._pages = pages
        self._campaigns = campaigns
        self._db = db
        self._shaping = shaping

    async def bare(self) -> Response:
        return home()

    async def index(
        self, request: Request, status: str = "", before: str = "", trail: str = ""
    ) -> Response:
        """The sign-in form, or once signed in the campaign list."""
        session = await self._pages.signed_in(request)
        if session is None:
            return self._pages.page("sign_in.html", error=None)
        chosen = CampaignStatus(status) if status in _STATUSES else None
        before_id = int(before) if before.isdigit() and before != "0" else None
        listing = await self._campaigns.listing(session.user_id, chosen, before_id, PAGE_SIZE)
        rows = await progress(
            self._campaigns,
            self._db,
            self._pages.clock,
            session.user_id,
            [c.campaign_id for c in listing.items],
        )
        return self._pages.page(
            "campaigns.html",
            section="campaigns",
            session=session,
            rows=rows,
            statuses=list(CampaignStatus),
            chosen=chosen,
            pages=_Paging(before_id, trail, listing.next_cursor),
        )

    async def sign_in(self, request: Request) -> Response:
        """Exchange a key for a session cookie; a refused key sets nothing."""
        key = (await form_fields(request)).get("key", "").strip()
        client = request.client.host if request.client else ""
        try:
            opened = await self._pages.sessions.sign_in(key, client)
        except TooManySignIns as limited:
            wait = int(limited.retry_after)
            error = f"Too many failed sign-ins from your address. Try again in {wait} s."
            response = self._pages.page("sign_in.html", 429, error=error)
            response.headers["Retry-After"] = str(wait)
            return response
        if opened is None:
            return self._pages.page("sign_in.html", 401, error="That API key is not valid.")
        response = home()
        response.set_cookie(
            COOKIE,
            opened.token,
            max_age=int(LIFETIME.total_seconds()),
            path="/ui",
            secure=self._pages.secure,
            httponly=True,
            samesite="strict",
        )
        return response

    async def sign_out(self, request: Request) -> Response:
        """End the session: the form must carry the session's CSRF token."""
        session = await self._pages.signed_in(request)
        if session is None or not csrf_ok(session, (await form_fields(request)).get("csrf")):
            return self._pages.forbidden()
        await self._pages.sessions.sign_out(session)
        response = home()
        response.delete_cookie(
            COOKIE, path="/ui", secure=self._pages.secure, httponly=True, samesite="strict"
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
        session = await self._pages.signed_in(request)
        if session is None:
            return home()
        wanted = campaign_page.Filter.parse(status, recipient, after)
        try:
            page = await campaign_page.load(
                self._campaigns,
                self._db,
                session.user_id,
                int(campaign_id),
                wanted,
                self._pages.window,
                self._pages.clock(),
                self._shaping,
            )
        except (NotFound, ValueError):
            return self._pages.not_found(session)
        recent = await live.recent(self._db, session.user_id, page.view.campaign_id)
        return self._pages.page(
            "campaign.html",
            recent=recent,
            section="campaigns",
            session=session,
            page=page,
            view=page.view,
            wanted=wanted,
            notice=_NOTICES.get(notice),
            statuses=list(DeliveryStatus),
        )

    async def progress(self, request: Request, ids: str = "") -> Response:
        """The list's numbers for ``ui.js``: only the caller's campaigns among ``ids``."""
        session = await self._pages.signed_in(request)
        if session is None:
            return secured(JSONResponse({"error": "not signed in"}, status_code=401))
        wanted = [int(i) for i in ids.split(",") if i.isdigit()][:MAX_IDS]
        rows = await progress(self._campaigns, self._db, self._pages.clock, session.user_id, wanted)
        return secured(JSONResponse({"campaigns": [row.as_json() for row in rows]}))

    async def static(self, name: str) -> Response:
        """The stylesheet and the script, from the package."""
        if name not in _STATIC:
            return self._pages.not_found(None)
        return secured(FileResponse(HERE / "static" / name, media_type=_STATIC[name]))


_NOTICES = {
    "created": "Created.",
    "pause": "Paused.",
    "resume": "Resumed.",
    "cancel": "Cancelled.",
    "retry-failed": "The failed deliveries will be sent again.",
    "schedule": "Scheduled: its recipients are planned, in the order they were uploaded.",
    "unplannable": "It cannot be scheduled: its calendar or start leave no time to send.",
    "conflict": "That is not possible in the campaign's current status.",
}


class _Controls:
    """Schedule (a draft), Pause, Resume, Cancel and Retry failed: POST forms with the
    CSRF token, each calling the service method the API calls, then 303 back."""

    def __init__(self, pages: Pages, campaigns: Campaigns, on_resumed: Callable[[], None]) -> None:
        self._pages = pages
        self._campaigns = campaigns
        self._on_resumed = on_resumed

    async def act(self, request: Request, campaign_id: str, action: str) -> Response:
        session = await self._pages.signed_in(request)
        if session is None or not csrf_ok(session, (await form_fields(request)).get("csrf")):
            return self._pages.forbidden()
        if action not in campaign_page.CONTROLS or not campaign_id.isdigit():
            return self._pages.not_found(session)
        user_id, ident = session.user_id, int(campaign_id)
        try:
            if action == "schedule":
                await self._campaigns.schedule(user_id, ident)
                self._on_resumed()
            elif action == "pause":
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
            return self._pages.not_found(session)
        except Conflict:
            action = "conflict"
        except Invalid:
            action = "unplannable"
        return see_other(f"/ui/campaigns/{ident}?notice={action}")


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
