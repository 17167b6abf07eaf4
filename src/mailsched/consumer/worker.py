"""The worker loop: take due deliveries from the queue, claim, send, record, acknowledge.

A message is acknowledged only after its delivery's outcome is in the database,
so a worker that dies loses nothing: the queue hands the message out again, or
the dispatcher's reaper does once the lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import WorkerConfig
from mailsched.consumer.claim import Claim, ClaimRequest, claim
from mailsched.consumer.letters import LetterFactory
from mailsched.domain.limits import backoff
from mailsched.domain.model import Campaign
from mailsched.errors import MailschedError, PermanentSendError, SendError
from mailsched.mail import Mailer
from mailsched.queue import DeliveryQueue, DueDelivery, Received
from mailsched.store.campaigns import complete_if_done
from mailsched.store.db import Database
from mailsched.store.sending import Claimable, Outcomes, record

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: A send is not started with less than this left on its lease.
_LEASE_MARGIN = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class WorkerDeps:
    """What a worker is wired with (see :func:`mailsched.bootstrap.build`)."""

    db: Database
    queue: DeliveryQueue
    mailer: Mailer
    letters: LetterFactory
    config: WorkerConfig
    window: timedelta
    clock: Clock
    owner: str


class Worker:
    """Consumes due deliveries until told to stop."""

    def __init__(self, deps: WorkerDeps) -> None:
        self._deps = deps
        self._inflight: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then finish the batches in flight."""
        cfg = self._deps.config
        slots = asyncio.Semaphore(cfg.inflight_batches)
        while not stop.is_set():
            await slots.acquire()
            try:
                messages = await self._receive()
            except BaseException:
                slots.release()
                raise
            if not messages:
                slots.release()
                continue
            task = asyncio.create_task(self.handle(messages))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            task.add_done_callback(lambda _t: slots.release())
        await self.drain(cfg.shutdown_grace)

    async def drain(self, grace: float) -> None:
        """Wait for the batches in flight, at most ``grace`` seconds."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=grace)

    async def _receive(self) -> Sequence[Received]:
        try:
            return await self._deps.queue.receive(self._deps.config.batch_size, timeout=0.2)
        except MailschedError as exc:
            log.warning("queue unavailable, retrying: %s", exc)
            await asyncio.sleep(1.0)
            return []

    async def handle(self, messages: Sequence[Received]) -> None:
        """Handle one batch of messages to the end, then acknowledge them."""
        by_campaign: dict[int, list[int]] = defaultdict(list)
        for message in messages:
            by_campaign[message.delivery.campaign_id].append(message.delivery.delivery_id)
        while True:
            try:
                await asyncio.gather(*(self._campaign(c, ids) for c, ids in by_campaign.items()))
                break
            except MailschedError as exc:
                # The database or queue went away mid-batch: nothing is recorded
                # for the unfinished part, so doing it again is safe.
                log.warning("batch interrupted, retrying: %s", exc)
                await asyncio.sleep(1.0)
        await self._deps.queue.ack(messages)

    async def _campaign(self, campaign_id: int, ids: list[int]) -> None:
        deps = self._deps
        pending = ids
        while pending:
            now = deps.clock()
            request = ClaimRequest(
                campaign_id=campaign_id,
                delivery_ids=pending,
                now=now,
                owner=deps.owner,
                lease=deps.config.lease,
                hold=deps.config.hold,
                window=deps.window,
            )
            result = await deps.db.run(lambda conn, r=request: claim(conn, r))  # type: ignore[misc]
            if result.replanned:
                log.info(
                    "campaign %d fell behind: %d deliveries re-planned",
                    campaign_id,
                    result.replanned,
                )
            if result.admitted:
                await self._send(result)
            pending = result.waiting
            if result.wait_until is not None:
                await asyncio.sleep(max(0.0, (result.wait_until - deps.clock()).total_seconds()))

    async def _send(self, result: Claim) -> None:
        deps = self._deps
        assert result.campaign is not None and result.lease_until is not None
        campaign, lease_until = result.campaign, result.lease_until
        outcomes = await asyncio.gather(
            *(self._send_one(campaign, row, lease_until) for row in result.admitted)
        )
        batch = _collect(result.admitted, result.first_seq, outcomes, deps.config, deps.clock())
        lost = await deps.db.run(lambda conn: self._record(conn, campaign.id, batch))
        if lost:
            log.warning(
                "campaign %d: %d outcomes not recorded, their lease was taken over",
                campaign.id,
                lost,
            )
        if batch.failed:
            await deps.queue.dead_letter(
                [DueDelivery(did, campaign.id) for did, _ in batch.failed],
                "; ".join(sorted({err for _, err in batch.failed}))[:500],
            )

    async def _record(self, conn: AsyncConnection, campaign_id: int, batch: Outcomes) -> int:
        now = self._deps.clock()
        lost = await record(conn, campaign_id, self._deps.owner, batch, now)
        await complete_if_done(conn, campaign_id, now)
        return lost

    async def _send_one(
        self, campaign: Campaign, row: Claimable, lease_until: datetime
    ) -> tuple[datetime, Exception | None] | None:
        """Send one claimed delivery: ``(finished_at, error)``, or ``None`` when not sent."""
        deps = self._deps
        if deps.clock() > lease_until - _LEASE_MARGIN:
            return None
        campaign_id = campaign.id
        letter = deps.letters.letter(campaign, row.id, row.recipient, deps.clock())
        try:
            await deps.mailer.send(letter)
        except SendError as exc:
            log.info("campaign %d delivery %d: %s", campaign_id, row.id, exc)
            return deps.clock(), exc
        except Exception as exc:  # a bug or an untranslated error: retry, and say so loudly
            log.exception("campaign %d delivery %d: unexpected error", campaign_id, row.id)
            return deps.clock(), exc
        return deps.clock(), None


def _collect(
    rows: Sequence[Claimable],
    first_seq: int,
    results: Sequence[tuple[datetime, Exception | None] | None],
    config: WorkerConfig,
    now: datetime,
) -> Outcomes:
    """Sort send results into the outcomes to record."""
    sent: list[tuple[int, datetime]] = []
    retry: list[tuple[int, datetime, str]] = []
    failed: list[tuple[int, str]] = []
    released: list[int] = []
    ends: list[tuple[int, datetime]] = []
    for i, (row, res) in enumerate(zip(rows, results, strict=True)):
        if res is None:
            released.append(row.id)
            ends.append((first_seq + i, now))
            continue
        finished, error = res
        ends.append((first_seq + i, finished))
        attempt = row.attempts + 1
        if error is None:
            sent.append((row.id, finished))
        elif isinstance(error, PermanentSendError) or attempt >= config.max_attempts:
            failed.append((row.id, _describe(error)))
        else:
            delay = backoff(attempt, config.retry_base, config.retry_cap, random.random())
            retry.append((row.id, now + delay, _describe(error)))
    return Outcomes(sent=sent, retry=retry, failed=failed, released=released, finished=ends)


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"
