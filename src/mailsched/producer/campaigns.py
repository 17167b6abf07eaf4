"""Campaign use cases: create (plan + store in one transaction) and read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.model import Campaign, CampaignStatus, DeliveryStatus
from mailsched.domain.plan import Rules, plan
from mailsched.errors import NotFound
from mailsched.producer.schemas import (
    CampaignCreated,
    CampaignRequest,
    CampaignView,
    DeliveryItem,
    DeliveryPage,
    RetryStarted,
)
from mailsched.store import campaigns as store
from mailsched.store import sending
from mailsched.store.db import Database

Clock = Callable[[], datetime]


class Campaigns:
    """The producer's services; each method is one transaction."""

    def __init__(self, db: Database, window: timedelta, clock: Clock) -> None:
        self._db = db
        self._window = window
        self._clock = clock

    async def create(self, request: CampaignRequest) -> CampaignCreated:
        """Plan every recipient's send; store the campaign and its deliveries, all or nothing."""
        now = self._clock()
        rules = Rules(timedelta(seconds=request.delay_seconds), request.hourly_limit, self._window)
        times = plan(len(request.recipients), max(request.start_time, now), rules)
        new = store.NewCampaign(
            user_id=request.user_id,
            subject=request.subject,
            body=request.body,
            start_time=request.start_time,
            delay_seconds=request.delay_seconds,
            hourly_limit=request.hourly_limit,
        )

        async def work(conn: AsyncConnection) -> int:
            return await store.insert_campaign(conn, new, request.recipients, times, now)

        campaign_id = await self._db.run(work)
        return CampaignCreated(
            campaign_id=campaign_id,
            status=CampaignStatus.SCHEDULED,
            recipient_count=len(request.recipients),
            duplicates_dropped=request.duplicates_dropped,
            first_send_at=times[0],
            last_send_at=times[-1],
        )

    async def get(self, campaign_id: int) -> CampaignView:
        """The campaign with its delivery counts and send times."""

        async def work(conn: AsyncConnection) -> tuple[Campaign, store.Summary]:
            campaign = await _existing(conn, campaign_id)
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
        )

    async def retry_failed(self, campaign_id: int) -> RetryStarted:
        """Send the campaign's FAILED deliveries again, planned from now under its rules."""

        async def work(conn: AsyncConnection) -> int:
            campaign = await store.get_campaign(conn, campaign_id, lock=True)
            if campaign is None:
                raise NotFound(f"campaign {campaign_id} not found")
            now = self._clock()
            count = await sending.retry_failed(conn, campaign_id, now)
            if count:
                await sending.replan(conn, campaign_id, campaign.rules(self._window), now)
            return count

        return RetryStarted(campaign_id=campaign_id, retried=await self._db.run(work))

    async def deliveries(
        self, campaign_id: int, status: DeliveryStatus | None, after_id: int, limit: int
    ) -> DeliveryPage:
        """A page of the campaign's deliveries."""

        async def work(conn: AsyncConnection) -> list[store.DeliveryView]:
            await _existing(conn, campaign_id)
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
                )
                for r in rows
            ],
            next_cursor=str(rows[-1].id) if more else None,
        )


async def _existing(conn: AsyncConnection, campaign_id: int) -> Campaign:
    campaign = await store.get_campaign(conn, campaign_id)
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} not found")
    return campaign
