"""The new-campaign form: ``/ui/campaigns/new``.

The form holds the create request's common fields; the recipients are pasted one
per line or read from a CSV file (:mod:`mailsched.ui.recipient_list`). It is
checked by the API's own model and services, so it refuses what the API refuses,
naming the field beside it (a recipient by its line).

``Preview`` shows the first recipient's rendered subject and body and the plan
from :meth:`Campaigns.plan`; ``Create campaign`` creates through
:meth:`Campaigns.create` with the idempotency key the form was rendered with, so
a double click, or a form sent again, makes one campaign. Each rendering of the
form carries a new key.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from mailsched.domain import calendar
from mailsched.errors import Conflict, Invalid
from mailsched.mail.templates import CampaignTemplates, TemplateProblem, context
from mailsched.producer.api import Limits
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.schemas import CampaignPlan, CampaignRequest
from mailsched.store.ui_sessions import UiSession
from mailsched.ui.recipient_list import BadList, read_recipients
from mailsched.ui.web import Pages, csrf_ok, home, see_other

#: Planned sends the preview lists.
PLAN_ROWS = 10
#: Days of the plan the preview lists.
PLAN_DAYS = 14
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: Where an error about a request field is shown: the form's field of that name.
_FORM_FIELD = {
    "subject": "subject",
    "body": "body",
    "htmlBody": "html_body",
    "startTime": "start",
    "delaySeconds": "delay",
    "hourlyLimit": "limit",
    "recipients": "recipients",
    "schedule": "window",
    "schedule.timezone": "zone",
    "schedule.fallbackTimezone": "zone",
    "schedule.days": "days",
}


@dataclass(slots=True)
class Form:
    """The form's fields as typed, and what is wrong with them."""

    subject: str = ""
    body: str = ""
    html_body: str = ""
    start: str = ""
    zone: str = "UTC"
    delay: str = "0"
    limit: str = "100"
    recipients: str = ""
    window_from: str = ""
    window_until: str = ""
    days: list[str] = field(default_factory=list)
    recipient_zones: bool = False
    #: Form field -> messages; "" for the form as a whole.
    errors: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, fields: dict[str, list[str]]) -> Form:
        def one(name: str, default: str = "") -> str:
            return fields.get(name, [default])[0]

        return cls(
            subject=one("subject"),
            body=one("body").replace("\r\n", "\n"),
            html_body=one("html_body").replace("\r\n", "\n"),
            start=one("start").strip(),
            zone=one("zone", "UTC").strip() or "UTC",
            delay=one("delay", "0").strip(),
            limit=one("limit", "100").strip(),
            recipients=one("recipients"),
            window_from=one("window_from").strip(),
            window_until=one("window_until").strip(),
            days=[d for d in fields.get("days", []) if d in WEEKDAYS],
            recipient_zones=one("recipient_zones") == "on",
        )

    def wrong(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)


@dataclass(frozen=True, slots=True)
class Preview:
    """What the email looks like for the first recipient, and when each goes."""

    recipient: str
    subject: str
    body: str
    html_body: str | None
    plan: CampaignPlan
    zone: str
    days: list[tuple[str, int]]


def compose_routes(
    pages: Pages, campaigns: Campaigns, on_created: Callable[[], None], limits: Limits
) -> APIRouter:
    """``/ui/campaigns/new``: the form, its preview and the create."""
    composer = _Composer(pages, campaigns, on_created, limits)
    router = APIRouter()
    router.add_api_route("/campaigns/new", composer.blank, methods=["GET"])
    router.add_api_route("/campaigns/new", composer.submit, methods=["POST"])
    return router


class _Composer:
    def __init__(
        self,
        pages: Pages,
        campaigns: Campaigns,
        on_created: Callable[[], None],
        limits: Limits,
    ) -> None:
        self._pages = pages
        self._campaigns = campaigns
        self._on_created = on_created
        self._limits = limits

    async def blank(self, request: Request) -> Response:
        session = await self._pages.signed_in(request)
        if session is None:
            return home()
        return self._form(session, Form())

    async def submit(self, request: Request) -> Response:
        """``action=preview`` or ``action=create``."""
        session = await self._pages.signed_in(request)
        raw = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        if session is None or not csrf_ok(session, raw.get("csrf", [None])[0]):
            return self._pages.forbidden()
        form = Form.read(raw)
        checked = self._checked(session.user_id, form)
        if checked is None:
            return self._form(session, form, status_code=422)
        request_, lines = checked
        try:
            if raw.get("action", [""])[0] == "create":
                key = raw.get("idempotency", [""])[0][:255] or None
                return await self._create(request_, key)
            preview = await self._preview(request_, form)
        except Invalid as exc:
            for name, message in exc.problems:
                _place(form, name, message, lines)
            return self._form(session, form, status_code=422)
        except Conflict as exc:
            form.wrong("", str(exc))
            return self._form(session, form, status_code=409)
        return self._form(session, form, preview=preview)

    def _form(
        self,
        session: UiSession,
        form: Form,
        *,
        preview: Preview | None = None,
        status_code: int = 200,
    ) -> Response:
        return self._pages.page(
            "new_campaign.html",
            status_code,
            section="new",
            session=session,
            form=form,
            preview=preview,
            weekdays=WEEKDAYS,
            zones=sorted(calendar.zone_names()),
            # A new key for each rendering: each is a new intent to create.
            idempotency=f"ui-{secrets.token_urlsafe(18)}",
            max_recipients=self._limits.body_recipients,
        )

    def _checked(self, user_id: int, form: Form) -> tuple[CampaignRequest, list[int]] | None:
        """The create request the form stands for, or ``None`` with ``form.errors`` set."""
        try:
            listed = read_recipients(form.recipients, self._limits.body_recipients)
        except BadList as exc:
            form.wrong("recipients", str(exc))
            listed = None
        start = _start(form, self._pages.clock())
        document = {
            "userId": user_id,
            "subject": form.subject,
            "body": form.body,
            "htmlBody": form.html_body or None,
            "startTime": start,
            "delaySeconds": _number(form.delay),
            "hourlyLimit": _number(form.limit),
            "recipients": listed.items if listed else [],
            "schedule": _schedule(form),
        }
        try:
            checked = CampaignRequest.model_validate(document)
        except ValidationError as exc:
            for error in exc.errors():
                name = ".".join(str(p) for p in error["loc"])
                _place(form, name, _message(error["msg"]), listed.lines if listed else [])
            return None
        for name, text in (("body", form.body), ("html_body", form.html_body)):
            if len(text.encode()) > self._limits.max_body_bytes:
                form.wrong(name, f"at most {self._limits.max_body_bytes} bytes")
        if form.errors:
            return None
        return checked, listed.lines if listed else []

    async def _create(self, request: CampaignRequest, key: str | None) -> Response:
        created = await self._campaigns.create(request, key)
        if not created.replayed:
            self._on_created()
        campaign_id = int(json.loads(created.body)["campaignId"])
        return see_other(f"/ui/campaigns/{campaign_id}?notice=created")

    async def _preview(self, request: CampaignRequest, form: Form) -> Preview:
        plan = await self._campaigns.plan(request, PLAN_ROWS)
        first = request.recipients[0]
        try:
            rendered = CampaignTemplates(request.subject, request.body, request.html_body).render(
                context(first.email, first.name, first.vars)
            )
        except TemplateProblem as exc:  # the plan has checked them: only as a safeguard
            raise Invalid([(exc.field, str(exc))]) from None
        zone = form.zone if request.schedule and not form.recipient_zones else "UTC"
        return Preview(
            recipient=first.email,
            subject=rendered.subject,
            body=rendered.body,
            html_body=rendered.html_body,
            plan=plan,
            zone=zone,
            days=list(plan.per_day.items())[:PLAN_DAYS],
        )


def _place(form: Form, name: str, message: str, lines: list[int]) -> None:
    """Put an error about the request's field ``name`` beside the form's field."""
    parts = name.split(".")
    if parts[0] == "recipients" and len(parts) > 1 and parts[1].isdigit():
        index = int(parts[1])
        line = lines[index] if index < len(lines) else index + 1
        detail = ".".join(parts[2:])
        form.wrong("recipients", f"line {line}: {detail + ': ' if detail else ''}{message}")
        return
    for length in range(len(parts), 0, -1):
        target = _FORM_FIELD.get(".".join(parts[:length]))
        if target is not None:
            form.wrong(target, message)
            return
    form.wrong("", f"{name}: {message}")


def _message(text: str) -> str:
    return text.removeprefix("Value error, ")


def _number(text: str) -> int | str:
    """An integer field as the API would take it; anything else as typed, for the
    model to refuse with its own message."""
    try:
        return int(text)
    except ValueError:
        return text


def _start(form: Form, now: datetime) -> str:
    """The start as an ISO 8601 time with its offset; ``now`` when left empty."""
    if not form.start:
        return now.isoformat()
    try:
        local = datetime.fromisoformat(form.start)
    except ValueError:
        form.wrong("start", "not a date and time")
        return now.isoformat()
    return local.replace(tzinfo=_zone(form)).isoformat()


def _zone(form: Form) -> ZoneInfo:
    try:
        return calendar.zone(form.zone)
    except calendar.UnknownZone as exc:
        form.wrong("zone", str(exc))
        return calendar.zone("UTC")


def _schedule(form: Form) -> dict[str, object] | None:
    """A sending window, when both of its times are given."""
    if not (form.window_from or form.window_until):
        if form.days or form.recipient_zones:
            form.wrong("window", "give the window's times to send on chosen days or zones")
        return None
    if not (form.window_from and form.window_until):
        form.wrong("window", "give both times of the window, or neither")
        return None
    schedule: dict[str, object] = {
        "timezone": "recipient" if form.recipient_zones else form.zone,
        "windows": [{"start": form.window_from, "end": form.window_until}],
    }
    if form.recipient_zones:
        schedule["fallbackTimezone"] = form.zone
    if form.days:
        schedule["days"] = form.days
    return schedule
