"""Campaign use cases. Each public method is one transaction, scoped to the calling user."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain import calendar
from mailsched.domain.calendar import Schedule
from mailsched.domain.model import (
    CANCEL,
    PAUSE,
    RESUME,
    Campaign,
    CampaignStatus,
    DeliveryMove,
    DeliveryStatus,
)
from mailsched.domain.plan import PastCalendar, Rules
from mailsched.errors import Conflict, DuplicateKey, Invalid, NotFound
from mailsched.producer import templates
from mailsched.producer.schemas import (
    CampaignControl,
    CampaignCreated,
    CampaignPage,
    CampaignPlan,
    CampaignRequest,
    CampaignSummary,
    CampaignView,
    DeliveryItem,
    DeliveryPage,
    PlannedDelivery,
    RetryStarted,
)
from mailsched.store import campaigns as store
from mailsched.store import feedback, idempotency, sending, suppressions
from mailsched.store.db import Database

Clock = Callable[[], datetime]

IDEMPOTENCY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class _Planned:
    """A checked request's deliveries, planned."""

    rows: list[store.NewDelivery]
    templated: bool
    schedule: Schedule | None
    now: datetime
    #: When sending may begin: the request's start time, or now if that has passed.
    start: datetime


@dataclass(frozen=True, slots=True)
class Created:
    """A create's answer: the status code and body, and whether it is a stored replay."""

    status_code: int
    body: str
    replayed: bool = False


class Campaigns:
    """The producer's services."""

    def __init__(
        self,
        db: Database,
        window: timedelta,
        clock: Clock,
        *,
        max_body_bytes: int = templates.MAX_BODY_BYTES,
    ) -> None:
        self._db = db
        self._window = window
        self._clock = clock
        self._max_body_bytes = max_body_bytes

    async def create(self, request: CampaignRequest, idempotency_key: str | None = None) -> Created:
        """Plan every recipient's send; store the campaign and its deliveries, all or nothing.

        With an ``idempotency_key``, the first answer is stored in the same
        transaction and given again for the same request within 24 hours; a
        different request with the same key is a :class:`Conflict`.
        """
        planned = await self._planned(request)
        new = store.NewCampaign(
            user_id=request.user_id,
            subject=request.subject,
            body=request.body,
            start_time=request.start_time,
            delay_seconds=request.delay_seconds,
            hourly_limit=request.hourly_limit,
            html_body=request.html_body,
            templated=planned.templated,
            schedule=planned.schedule,
        )
        rows, now, start = planned.rows, planned.now, planned.start
        times = [row.scheduled_at for row in rows if row.status == DeliveryStatus.SCHEDULED]
        fingerprint = _fingerprint(request) if idempotency_key else ""

        async def work(conn: AsyncConnection) -> Created:
            if idempotency_key:
                stored = await idempotency.find(
                    conn, request.user_id, idempotency_key, now - IDEMPOTENCY_WINDOW
                )
                if stored is not None:
                    if stored.request_hash != fingerprint:
                        raise Conflict("this Idempotency-Key was used for a different request")
                    return Created(stored.status_code, stored.response, replayed=True)
            campaign_id = await store.insert_campaign(conn, new, rows, now)
            body = CampaignCreated(
                campaign_id=campaign_id,
                status=CampaignStatus.SCHEDULED,
                recipient_count=len(rows),
                duplicates_dropped=request.duplicates_dropped,
                first_send_at=min(times, default=start),
                last_send_at=max(times, default=start),
            ).model_dump_json(by_alias=True)
            if idempotency_key:
                await idempotency.save(
                    conn, request.user_id, idempotency_key, fingerprint, 201, body, now
                )
            return Created(201, body)

        try:
            return await self._db.run(work)
        except DuplicateKey:
            # The same key raced in from another request and won: answer as it did.
            return await self._db.run(work)

    async def plan(self, request: CampaignRequest, limit: int) -> CampaignPlan:
        """What :meth:`create` would plan for ``request``, with the same checks; stores nothing."""
        planned = await self._planned(request)
        sends = sorted(
            (row.scheduled_at, i, row)
            for i, row in enumerate(planned.rows)
            if row.status == DeliveryStatus.SCHEDULED
        )
        schedule = planned.schedule
        day_zone = (
            calendar.zone(schedule.timezone)
            if schedule is not None and not schedule.per_recipient
            else UTC
        )
        per_day = Counter(at.astimezone(day_zone).date().isoformat() for at, _, _ in sends)
        return CampaignPlan(
            recipient_count=len(planned.rows),
            duplicates_dropped=request.duplicates_dropped,
            suppressed=len(planned.rows) - len(sends),
            first_send_at=sends[0][0] if sends else None,
            last_send_at=sends[-1][0] if sends else None,
            per_day=dict(sorted(per_day.items())),
            deliveries=[
                PlannedDelivery(
                    recipient=row.recipient,
                    timezone=schedule.zone_of(row.timezone) if schedule else "UTC",
                    scheduled_at=at,
                )
                for at, _, row in sends[:limit]
            ],
        )

    async def _planned(self, request: CampaignRequest) -> _Planned:
        """Check ``request`` as a create does, and plan each recipient's send."""
        # Rendering every recipient's templates can take a second: not on the event loop.
        templated = await asyncio.to_thread(_check_templates, request, self._max_body_bytes)
        schedule = _check_schedule(request, max(request.start_time, self._clock()))
        suppressed = await self._suppressed(request)
        now = self._clock()
        start = max(request.start_time, now)
        rules = Rules(timedelta(seconds=request.delay_seconds), request.hourly_limit, self._window)
        sending_to = [r for r in request.recipients if r.email not in suppressed]
        zones = [r.timezone for r in sending_to] if schedule and schedule.per_recipient else []
        try:
            # A calendar's plan of 100,000 sends takes a quarter of a second: off the loop too.
            times = iter(
                await asyncio.to_thread(
                    calendar.plan_sends,
                    schedule,
                    zones or [None] * len(sending_to),
                    start,
                    rules,
                    (),
                    random.random,
                )
            )
        except PastCalendar as error:
            raise Invalid([("startTime", f"too late for these rules: {error}")]) from error
        # The recipient's own zone is stored (the fallback resolved) for a worker's claim.
        fallback = schedule.fallback if schedule and zones else None
        rows = []
        for r in request.recipients:
            if r.email in suppressed:
                at, status = start, DeliveryStatus.SUPPRESSED
            else:
                at, status = next(times), DeliveryStatus.SCHEDULED
            zone = (r.timezone or fallback) if fallback else None
            variables = json.dumps(r.vars) if r.vars else None
            rows.append(store.NewDelivery(r.email, at, r.name, variables, status, zone))
        return _Planned(rows, templated, schedule, now, start)

    async def _suppressed(self, request: CampaignRequest) -> set[str]:
        """The recipients this user has suppressed (they are stored, but as SUPPRESSED).

        Read before the create's transaction; one suppressed meanwhile is still
        caught by the worker's claim.
        """

        async def work(conn: AsyncConnection) -> set[str]:
            if not await suppressions.has_any(conn, request.user_id):
                return set()
            return await suppressions.suppressed(
                conn, request.user_id, [r.email for r in request.recipients], self._clock()
            )

        return await self._db.run(work)

    async def get(self, user_id: int, campaign_id: int) -> CampaignView:
        """The campaign with its delivery counts and send times."""

        async def work(conn: AsyncConnection) -> tuple[Campaign, store.Summary]:
            campaign = await _owned(conn, user_id, campaign_id)
            return campaign, await store.summarize(conn, campaign_id)

        campaign, summary = await self._db.run(work)
        return CampaignView(
            campaign_id=campaign.id,
            user_id=campaign.user_id,
            subject=campaign.subject,
            status=campaign.status,
            start_time=campaign.start_time,
            delay_seconds=campaign.delay_seconds,
            hourly_limit=campaign.hourly_limit,
            recipient_count=campaign.recipient_count,
            counts=summary.counts,
            planned_first_send_at=summary.planned_first,
            planned_last_send_at=summary.planned_last,
            first_sent_at=summary.sent_first,
            last_sent_at=summary.sent_last,
            possible_duplicates=summary.possible_duplicates,
            created_at=campaign.created_at,
            completed_at=campaign.completed_at,
            schedule=None if campaign.schedule is None else campaign.schedule.to_json(),
            estimated_completion_at=_estimated_completion(campaign, summary),
            pause_reason=campaign.pause_reason
            if campaign.status == CampaignStatus.PAUSED
            else None,
        )

    async def listing(
        self, user_id: int, status: CampaignStatus | None, before_id: int | None, limit: int
    ) -> CampaignPage:
        """A page of the user's campaigns, newest first."""

        async def work(conn: AsyncConnection) -> list[Campaign]:
            return await store.list_campaigns(conn, user_id, status, before_id, limit + 1)

        found = await self._db.run(work)
        page = found[:limit]
        return CampaignPage(
            items=[
                CampaignSummary(
                    campaign_id=c.id,
                    status=c.status,
                    subject=c.subject,
                    recipient_count=c.recipient_count,
                    start_time=c.start_time,
                    created_at=c.created_at,
                    completed_at=c.completed_at,
                )
                for c in page
            ],
            next_cursor=str(page[-1].id) if len(found) > limit else None,
        )

    async def pause(self, user_id: int, campaign_id: int) -> CampaignControl:
        """Stop the campaign: once this returns, none of it starts sending on any worker."""
        return await self._control(
            user_id,
            campaign_id,
            allowed={CampaignStatus.SCHEDULED, CampaignStatus.RUNNING},
            target=CampaignStatus.PAUSED,
            deliveries=PAUSE,
        )

    async def cancel(self, user_id: int, campaign_id: int) -> CampaignControl:
        """Cancel everything of the campaign not yet claimed by a worker."""
        return await self._control(
            user_id,
            campaign_id,
            allowed={CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED},
            target=CampaignStatus.CANCELLED,
            deliveries=CANCEL,
        )

    async def resume(self, user_id: int, campaign_id: int) -> CampaignControl:
        """Send the rest of a paused campaign, planned again from now (never before its
        start) under its rules and calendar."""

        async def work(conn: AsyncConnection) -> CampaignControl:
            campaign = await _owned(conn, user_id, campaign_id, lock=True)
            if campaign.status != CampaignStatus.PAUSED:
                raise Conflict(f"campaign {campaign_id} is {campaign.status}, not PAUSED")
            now = self._clock()
            status = CampaignStatus.RUNNING if campaign.slot_seq else CampaignStatus.SCHEDULED
            await store.set_status(conn, campaign, status, now)
            await feedback.resumed(conn, campaign_id, now)
            await store.move_unclaimed(conn, campaign_id, RESUME, now)
            await sending.replan(
                conn, campaign, self._window, max(now, campaign.start_time), new_plan=True
            )
            in_flight = await store.count_status(conn, campaign_id, DeliveryStatus.SENDING)
            await store.complete_if_done(conn, campaign_id, now)
            return CampaignControl(campaign_id=campaign_id, status=status, in_flight=in_flight)

        return await self._db.run(work)

    async def _control(
        self,
        user_id: int,
        campaign_id: int,
        *,
        allowed: set[CampaignStatus],
        target: CampaignStatus,
        deliveries: DeliveryMove,
    ) -> CampaignControl:
        async def work(conn: AsyncConnection) -> CampaignControl:
            # The campaign's row lock orders this against every worker's claim:
            # a claim after this commit sees the new status and sends nothing.
            campaign = await _owned(conn, user_id, campaign_id, lock=True)
            if campaign.status != target:
                if campaign.status not in allowed:
                    raise Conflict(f"campaign {campaign_id} is {campaign.status}")
                now = self._clock()
                await store.set_status(conn, campaign, target, now)
                await store.move_unclaimed(conn, campaign_id, deliveries, now)
            in_flight = await store.count_status(conn, campaign_id, DeliveryStatus.SENDING)
            return CampaignControl(campaign_id=campaign_id, status=target, in_flight=in_flight)

        return await self._db.run(work)

    async def retry_failed(self, user_id: int, campaign_id: int) -> RetryStarted:
        """Send the campaign's FAILED deliveries again, planned from now under its rules."""

        async def work(conn: AsyncConnection) -> int:
            campaign = await _owned(conn, user_id, campaign_id, lock=True)
            if not campaign.status.sends and campaign.status != CampaignStatus.COMPLETED:
                raise Conflict(f"campaign {campaign_id} is {campaign.status}")
            now = self._clock()
            count = await sending.retry_failed(conn, campaign, now)
            if count:
                start = max(now, campaign.start_time)
                await sending.replan(conn, campaign, self._window, start, new_plan=True)
            return count

        return RetryStarted(campaign_id=campaign_id, retried=await self._db.run(work))

    async def deliveries(
        self,
        user_id: int,
        campaign_id: int,
        status: DeliveryStatus | None,
        after_id: int,
        limit: int,
    ) -> DeliveryPage:
        """A page of the campaign's deliveries."""

        async def work(conn: AsyncConnection) -> list[store.DeliveryView]:
            await _owned(conn, user_id, campaign_id)
            return await store.list_deliveries(conn, campaign_id, status, after_id, limit + 1)

        rows = await self._db.run(work)
        more = len(rows) > limit
        rows = rows[:limit]
        return DeliveryPage(
            items=[
                DeliveryItem(
                    delivery_id=r.id,
                    recipient=r.recipient,
                    scheduled_at=r.scheduled_at,
                    status=r.status,
                    attempts=r.attempts,
                    sent_at=r.sent_at,
                    last_error=r.last_error,
                    timezone=r.timezone,
                    relay=r.relay,
                    planned_at=r.planned_at,
                )
                for r in rows
            ],
            next_cursor=str(rows[-1].id) if more else None,
        )


_MAX_PROBLEMS = 20


def _check_templates(request: CampaignRequest, max_body_bytes: int) -> bool:
    """Whether the campaign is a template; :class:`Invalid` if a recipient cannot be rendered.

    Every variable is checked now, so a missing one is a 422 at creation, not a
    failure at send time; so is a body that would render over ``max_body_bytes``.
    """
    try:
        if not templates.is_templated(request.subject, request.body, request.html_body):
            return False
        required = templates.required_variables(request.subject, request.body, request.html_body)
        subject = templates.RecipientChecker(
            request.subject, request.body, request.html_body, max_body_bytes=max_body_bytes
        )
    except templates.TemplateProblem as problem:
        raise Invalid([(problem.field, str(problem))]) from problem
    problems: list[tuple[str, str]] = []
    for i, r in enumerate(request.recipients):
        missing = templates.missing_variables(required, (r.vars or {}).keys())
        if missing:
            problems.append((f"recipients.{i}.vars", f"missing variables: {', '.join(missing)}"))
        else:
            try:
                subject.render(r.email, r.name, r.vars)
            except templates.TemplateProblem as problem:
                problems.append((f"recipients.{i}", str(problem)))
        if len(problems) >= _MAX_PROBLEMS:
            break
    if problems:
        raise Invalid(problems)
    return True


def _estimated_completion(campaign: Campaign, summary: store.Summary) -> datetime | None:
    """When the campaign's last send is planned: every re-plan moves it. Once the campaign
    completed, when it did; unknown while it is paused, and for a cancelled one."""
    if campaign.status == CampaignStatus.COMPLETED:
        return campaign.completed_at
    if campaign.status.sends:
        return summary.pending_last
    return None


def _check_schedule(request: CampaignRequest, start: datetime) -> Schedule | None:
    """The request's calendar; :class:`Invalid`, naming the field, if it cannot be used
    from ``start`` (when sending may begin) on."""
    spec = request.schedule
    per_recipient = spec is not None and spec.timezone == calendar.RECIPIENT
    if spec is not None and per_recipient and spec.fallback_timezone is None:
        raise Invalid([("schedule.fallbackTimezone", 'required when timezone is "recipient"')])
    if not per_recipient:
        for i, r in enumerate(request.recipients):
            if r.timezone is not None:
                field = f"recipients.{i}.timezone"
                raise Invalid([(field, 'used only with schedule timezone "recipient"')])
    if spec is None:
        return None
    schedule = spec.domain()
    problems = _without_sending_time(request, schedule, start)
    gap = None if problems else calendar.long_gap(schedule, start.date())
    if gap is not None:
        days = calendar.HORIZON.days
        message = f"no sending day between {gap[0]} and {gap[1]}: more than {days} days"
        problems.append(("schedule.excludeDates", message))
    if problems:
        raise Invalid(problems[:_MAX_PROBLEMS])
    return schedule


def _without_sending_time(
    request: CampaignRequest, schedule: Schedule, now: datetime
) -> list[tuple[str, str]]:
    """A problem for each zone the request uses in which ``schedule`` never opens within
    the horizon, naming the field that brought the zone in."""
    zones = {r.timezone for r in request.recipients} if schedule.per_recipient else {None}
    closed = calendar.closed_zones(schedule, zones, now)
    days = calendar.HORIZON.days
    if closed and len(closed) == len({schedule.zone_of(z) for z in zones}):
        # Closed everywhere: the days, windows and dates are at fault, not a zone.
        return [("schedule", f"no sending time in the next {days} days in any zone it uses")]
    problems = []
    for name in closed:
        where = "schedule.fallbackTimezone"
        if name != schedule.fallback:
            i = next(i for i, r in enumerate(request.recipients) if r.timezone == name)
            where = f"recipients.{i}.timezone"
        problems.append((where, f"no sending time in {name} in the next {days} days"))
    return problems


def _fingerprint(request: CampaignRequest) -> str:
    data = request.model_dump(mode="json")
    if data.get("schedule") is None:
        # As before schedules existed: a retry across an upgrade still matches its key.
        data.pop("schedule", None)
    canonical = json.dumps(data, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _owned(
    conn: AsyncConnection, user_id: int, campaign_id: int, *, lock: bool = False
) -> Campaign:
    """The user's campaign; another user's is as absent as a missing one."""
    campaign = await store.get_campaign(conn, campaign_id, lock=lock)
    if campaign is None or campaign.user_id != user_id:
        raise NotFound(f"campaign {campaign_id} not found")
    return campaign
