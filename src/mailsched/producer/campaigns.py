"""Campaign use cases. Each public method is one transaction, scoped to the calling user."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
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
from mailsched.domain.plan import PastCalendar, Rules, steady_offset
from mailsched.errors import Conflict, DuplicateKey, Invalid, NotFound
from mailsched.producer import templates, uploads
from mailsched.producer.limits import TooLarge
from mailsched.producer.schemas import (
    CampaignControl,
    CampaignCreated,
    CampaignPage,
    CampaignPlan,
    CampaignRequest,
    CampaignScheduled,
    CampaignSummary,
    CampaignView,
    DeliveryItem,
    DeliveryPage,
    PlannedDelivery,
    Recipient,
    RecipientsAdded,
    RetryStarted,
    RowProblem,
)
from mailsched.store import campaigns as store
from mailsched.store import drafts, feedback, idempotency, sending, suppressions
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
        max_recipients: int = 10_000_000,
        margin: timedelta = timedelta(0),
    ) -> None:
        self._db = db
        self._window = window
        #: The room each planned gap and window leaves for the send before it to be
        #: answered (:meth:`~mailsched.domain.plan.Rules.planned`).
        self._margin = margin
        self._clock = clock
        self._max_body_bytes = max_body_bytes
        self._max_recipients = max_recipients

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
            draft=request.draft,
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
                status=CampaignStatus.DRAFT if request.draft else CampaignStatus.SCHEDULED,
                recipient_count=len(rows),
                duplicates_dropped=request.duplicates_dropped,
                first_send_at=None if request.draft else min(times, default=start),
                last_send_at=None if request.draft else max(times, default=start),
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
        rules = Rules(
            timedelta(seconds=request.delay_seconds), request.hourly_limit, self._window
        ).planned(self._margin)
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

    async def add_recipients(
        self,
        user_id: int,
        campaign_id: int,
        upload: uploads.Upload,
        idempotency_key: str | None = None,
    ) -> Created:
        """Append an upload's recipients to the user's draft, read and checked as it
        streams in, all in one transaction: all or nothing (:class:`RowsRefused`
        names the first bad rows), or with ``skip_invalid`` the good rows alone.

        Addresses the upload gives twice, or the draft holds already, are dropped and
        counted. With an ``idempotency_key``, the same upload again answers as the
        first did and adds nothing.
        """
        fingerprint = hashlib.sha256(
            f"recipients:{campaign_id}:{upload.content_type}:{upload.skip_invalid}:".encode()
        )

        async def hashed() -> AsyncIterator[bytes]:
            async for chunk in upload.chunks:
                fingerprint.update(chunk)
                yield chunk

        async def work(conn: AsyncConnection) -> Created:
            campaign = await _owned(conn, user_id, campaign_id, lock=True)
            if campaign.status != CampaignStatus.DRAFT:
                raise Conflict(f"campaign {campaign_id} is {campaign.status}, not DRAFT")
            now = self._clock()
            if idempotency_key:
                stored = await idempotency.find(
                    conn, user_id, idempotency_key, now - IDEMPOTENCY_WINDOW
                )
                if stored is not None:
                    async for _ in hashed():
                        pass
                    if stored.request_hash != fingerprint.hexdigest():
                        raise Conflict("this Idempotency-Key was used for a different request")
                    return Created(stored.status_code, stored.response, replayed=True)
            added = await self._append(conn, campaign, upload, hashed())
            body = added.model_dump_json(by_alias=True)
            if idempotency_key:
                digest = fingerprint.hexdigest()
                await idempotency.save(conn, user_id, idempotency_key, digest, 200, body, now)
            return Created(200, body)

        # Not retried on a deadlock: the body has been read.
        return await self._db.run(work, retry=False)

    async def _append(
        self,
        conn: AsyncConnection,
        campaign: Campaign,
        upload: uploads.Upload,
        chunks: AsyncIterator[bytes],
    ) -> RecipientsAdded:
        received = added = duplicates = invalid = 0
        over = False
        problems: list[uploads.Problem] = []
        check = _row_check(campaign, self._max_body_bytes, self._clock())
        rows = uploads.reader(upload.content_type, check)
        # Into an empty draft (its locked row counts what it holds), an address is a
        # duplicate only if the upload gave it before: the stored rows are asked only
        # about those the filter cannot rule out.
        seen = uploads.Seen() if campaign.recipient_count == 0 else None
        # Closed as soon as this stops, for whatever reason: its reader stops with it.
        reading = contextlib.aclosing(uploads.ahead(uploads.batches(chunks, rows)))
        try:
            async with reading as batches:
                async for batch in batches:
                    received += len(batch.rows) + len(batch.problems)
                    invalid += len(batch.problems)
                    problems += batch.problems[: _MAX_ROW_PROBLEMS - len(problems)]
                    if over or (invalid and not upload.skip_invalid):
                        # Read on (a client is told once it has sent its request), to name
                        # the first bad rows; store nothing.
                        continue
                    new = await self._new(conn, campaign, batch, seen)
                    duplicates += len(batch.rows) - len(new)
                    over = campaign.recipient_count + added + len(new) > self._max_recipients
                    if not over:
                        await drafts.append(conn, campaign.id, new)
                        added += len(new)
        except uploads.Unreadable as error:
            raise uploads.RowsRefused([error.problem], invalid + 1) from error
        if over:
            message = f"at most {self._max_recipients} recipients per campaign"
            raise TooLarge("recipients", message)
        if invalid and not upload.skip_invalid:
            raise uploads.RowsRefused(problems, invalid)
        if not received:
            raise Invalid([("body", "no recipients in the upload")])
        return RecipientsAdded(
            campaign_id=campaign.id,
            received=received,
            added=added,
            duplicates_dropped=duplicates,
            invalid=invalid,
            problems=[RowProblem(line=p.line, field=p.field, message=p.message) for p in problems],
            recipient_count=campaign.recipient_count + added,
        )

    async def _new(
        self,
        conn: AsyncConnection,
        campaign: Campaign,
        batch: uploads.Batch,
        seen: uploads.Seen | None,
    ) -> list[store.NewDelivery]:
        """The batch's rows whose addresses are new to the draft, as its deliveries
        (with ``seen``, the draft held none before this upload)."""
        fresh: dict[str, Recipient] = {}
        for _, r in batch.rows:
            fresh.setdefault(r.email.casefold(), r)
        asked = [r.email for key, r in fresh.items() if seen is None or seen.add(key)]
        held = await drafts.known(conn, campaign.id, asked)
        at = campaign.start_time
        # The recipient's own zone is stored (the fallback resolved) for a worker's claim.
        schedule = campaign.schedule
        fallback = schedule.fallback if schedule is not None and schedule.per_recipient else None
        return [
            store.NewDelivery(
                r.email,
                at,
                r.name,
                json.dumps(r.vars) if r.vars else None,
                DeliveryStatus.DRAFT,
                (r.timezone or fallback) if fallback else None,
            )
            for key, r in fresh.items()
            if key not in held
        ]

    async def schedule(self, user_id: int, campaign_id: int) -> CampaignScheduled:
        """Plan a draft's recipients, in the order they were uploaded, under the same
        rules as a create (its calendar, the user's suppressions), and schedule it."""

        async def work(conn: AsyncConnection) -> CampaignScheduled:
            campaign = await _owned(conn, user_id, campaign_id, lock=True)
            if campaign.status != CampaignStatus.DRAFT:
                raise Conflict(f"campaign {campaign_id} is {campaign.status}, not DRAFT")
            if not campaign.recipient_count:
                raise Conflict(f"campaign {campaign_id} has no recipients: upload them first")
            now = self._clock()
            start = max(campaign.start_time, now)
            if campaign.schedule is not None:
                _check_calendar(campaign.schedule, await drafts.zones(conn, campaign.id), start)
            suppressed = await self._suppress_drafts(conn, campaign, now)
            rules = campaign.rules(self._window).planned(self._margin)
            count = campaign.recipient_count - suppressed
            try:
                if campaign.schedule is None and count:
                    # Past the year 9999? Asked of the last send before any is written.
                    _ = start + steady_offset(count - 1, rules)
                await drafts.plan(conn, campaign, start, rules)
            except (PastCalendar, OverflowError) as error:
                message = "too late for these rules: the sends would run past the year 9999"
                raise Invalid([("startTime", message)]) from error
            await store.set_status(conn, campaign, CampaignStatus.SCHEDULED, now)
            await store.complete_if_done(conn, campaign.id, now)
            first, last = await drafts.span(conn, campaign.id)
            return CampaignScheduled(
                campaign_id=campaign.id,
                status=CampaignStatus.COMPLETED if not count else CampaignStatus.SCHEDULED,
                recipient_count=campaign.recipient_count,
                suppressed=suppressed,
                first_send_at=first,
                last_send_at=last,
            )

        return await self._db.run(work)

    async def _suppress_drafts(
        self, conn: AsyncConnection, campaign: Campaign, now: datetime
    ) -> int:
        """Move the draft's recipients that the user suppressed to SUPPRESSED."""
        if not await suppressions.has_any(conn, campaign.user_id):
            return 0
        moved, after = 0, 0
        while chunk := await drafts.addresses(conn, campaign.id, after):
            found = await suppressions.suppressed(
                conn, campaign.user_id, [a for _, a in chunk], now
            )
            ids = [did for did, address in chunk if address in found]
            moved += await suppressions.mark_suppressed(conn, ids, now)
            after = chunk[-1][0]
        return moved

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
            allowed={
                CampaignStatus.DRAFT,
                CampaignStatus.SCHEDULED,
                CampaignStatus.RUNNING,
                CampaignStatus.PAUSED,
            },
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
                conn,
                campaign,
                self._window,
                max(now, campaign.start_time),
                new_plan=True,
                margin=self._margin,
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
                await sending.replan(
                    conn, campaign, self._window, start, new_plan=True, margin=self._margin
                )
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
    # As before schedules and drafts existed: a retry across an upgrade still matches its key.
    if data.get("schedule") is None:
        data.pop("schedule", None)
    if not data.get("draft"):
        data.pop("draft", None)
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


#: The bad rows an upload's answer names.
_MAX_ROW_PROBLEMS = 100


def _row_check(campaign: Campaign, max_body_bytes: int, now: datetime) -> uploads.RowCheck:
    """The draft's own checks of an uploaded row: its templates render for the
    recipient (as a create checks each), and its zone fits the calendar."""
    schedule = campaign.schedule
    per_recipient = schedule is not None and schedule.per_recipient
    checker = (
        templates.RecipientChecker(
            campaign.subject, campaign.body, campaign.html_body, max_body_bytes=max_body_bytes
        )
        if campaign.templated
        else None
    )
    required = (
        templates.required_variables(campaign.subject, campaign.body, campaign.html_body)
        if checker
        else frozenset()
    )
    zones: dict[str, bool] = {}
    days = calendar.HORIZON.days

    def check(r: Recipient) -> None:
        if r.timezone is not None:
            if not per_recipient:
                raise uploads.BadField("timezone", 'used only with schedule timezone "recipient"')
            assert schedule is not None
            if r.timezone not in zones:
                start = max(campaign.start_time, now)
                zones[r.timezone] = not calendar.closed_zones(schedule, [r.timezone], start)
            if not zones[r.timezone]:
                message = f"no sending time in {r.timezone} in the next {days} days"
                raise uploads.BadField("timezone", message)
        if checker is None:
            return
        missing = templates.missing_variables(required, (r.vars or {}).keys())
        if missing:
            raise uploads.BadField("vars", f"missing variables: {', '.join(missing)}")
        try:
            checker.render(r.email, r.name, r.vars)
        except templates.TemplateProblem as problem:
            message = str(problem).removeprefix(f"{problem.field}: ")
            raise uploads.BadField(problem.field, message) from problem

    return check


def _check_calendar(schedule: Schedule, zones: set[str | None], start: datetime) -> None:
    """:class:`Invalid` unless ``schedule`` has sending time from ``start`` on in every
    zone the draft's recipients use."""
    days = calendar.HORIZON.days
    closed = calendar.closed_zones(schedule, zones if schedule.per_recipient else {None}, start)
    if closed:
        where = "schedule" if not schedule.per_recipient else "schedule.fallbackTimezone"
        message = f"no sending time in {', '.join(closed)} in the next {days} days"
        raise Invalid([(where, message)])
    gap = calendar.long_gap(schedule, start.date())
    if gap is not None:
        message = f"no sending day between {gap[0]} and {gap[1]}: more than {days} days"
        raise Invalid([("schedule.excludeDates", message)])
