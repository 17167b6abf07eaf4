"""Send the deliveries of one claim, and record each outcome soon after it is known.

Outcomes are written every few tens of milliseconds, not once the whole claim is
done: a worker that dies then leaves only the sends of that moment in doubt,
not every send of its batch. Writing is retried while the lease lasts, so a
short database outage does not turn finished sends into re-sends.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import WorkerConfig
from mailsched.consumer.claim import Claim
from mailsched.consumer.letters import LetterFactory
from mailsched.consumer.outcomes import Attempt, SendResult, Sorted, sort_results
from mailsched.domain.model import Campaign
from mailsched.errors import SendError, SendExpired, StoreError
from mailsched.mail import Mailer
from mailsched.metrics import Metrics
from mailsched.queue import DeliveryQueue, DueDelivery
from mailsched.store.campaigns import complete_if_done
from mailsched.store.db import Database
from mailsched.store.sending import Claimable, record, replan

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: How long finished sends may wait to be written together.
_FLUSH_SECONDS = 0.05


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
    metrics: Metrics


def lease_margin(lease: timedelta) -> timedelta:
    """How long before its lease ends a send may no longer start."""
    return min(timedelta(seconds=5), lease / 4)


async def send_claim(deps: WorkerDeps, claim: Claim) -> None:
    """Send every admitted delivery of ``claim``, recording outcomes as they come in."""
    assert claim.campaign is not None and claim.lease_until is not None
    campaign, lease_until = claim.campaign, claim.lease_until
    pending = {
        asyncio.create_task(_send_one(deps, campaign, claim.first_seq + i, row, lease_until))
        for i, row in enumerate(claim.admitted)
    }
    assert claim.claimed_at is not None
    for row in claim.admitted:
        deps.metrics.lateness.observe(
            max(0.0, (claim.claimed_at - row.scheduled_at).total_seconds())
        )
    while pending:
        done, pending = await asyncio.wait(pending, timeout=_FLUSH_SECONDS)
        if done:
            await _record(deps, campaign, [task.result() for task in done], lease_until)


async def _send_one(
    deps: WorkerDeps, campaign: Campaign, seq: int, row: Claimable, lease_until: datetime
) -> Attempt:
    margin = lease_margin(deps.config.lease)
    not_after = lease_until - margin
    started = time.perf_counter()
    try:
        # Inside the try: a message that cannot be made fails this delivery alone.
        letter = deps.letters.letter(
            campaign, row.id, row.recipient, deps.clock(), name=row.name, variables=row.vars
        )
        await deps.mailer.send(letter.expiring(not_after, not_after + margin))
    except SendExpired:
        return Attempt(seq, row, None)
    except SendError as exc:
        log.info("campaign %d delivery %d: %s", campaign.id, row.id, exc)
        deps.metrics.smtp_replies.labels(_reply_class(exc.code)).inc()
        return Attempt(seq, row, SendResult(deps.clock(), exc))
    except Exception as exc:  # a bug or an untranslated error: retry, and say so loudly
        log.exception("campaign %d delivery %d: unexpected error", campaign.id, row.id)
        deps.metrics.smtp_replies.labels("none").inc()
        return Attempt(seq, row, SendResult(deps.clock(), exc))
    finally:
        deps.metrics.send_seconds.observe(time.perf_counter() - started)
    deps.metrics.smtp_replies.labels("2xx").inc()
    return Attempt(seq, row, SendResult(deps.clock()))


async def _record(
    deps: WorkerDeps, campaign: Campaign, attempts: list[Attempt], lease_until: datetime
) -> None:
    verdict = sort_results(attempts, deps.config, deps.clock(), random.random)

    async def work(conn: AsyncConnection) -> int:
        now = deps.clock()
        lost = await record(conn, campaign.id, deps.owner, verdict.outcomes, now)
        if verdict.slow_down_until is not None:
            # The server asked us to slow down: the whole campaign waits, not just
            # the deliveries it refused.
            await replan(conn, campaign.id, campaign.rules(deps.window), verdict.slow_down_until)
        await complete_if_done(conn, campaign.id, now)
        return lost

    while True:
        try:
            lost = await deps.db.run(work)
            break
        except StoreError as exc:
            if deps.clock() >= lease_until:
                # The reaper takes these over now; their slots count as in doubt.
                log.error(
                    "campaign %d: %d outcomes lost with the lease: %s",
                    campaign.id,
                    len(attempts),
                    exc,
                )
                return
            log.warning("campaign %d: recording outcomes failed, retrying: %s", campaign.id, exc)
            await asyncio.sleep(0.5)
    _observe(deps.metrics, verdict)
    if lost:
        log.warning(
            "campaign %d: %d outcomes not recorded, their lease was taken over",
            campaign.id,
            lost,
        )
    if verdict.possible_duplicates:
        log.warning(
            "campaign %d: %d sends may have been delivered before the connection broke",
            campaign.id,
            verdict.possible_duplicates,
        )
    if verdict.outcomes.failed:
        await deps.queue.dead_letter(
            [DueDelivery(did, campaign.id) for did, _ in verdict.outcomes.failed],
            "; ".join(sorted({err for _, err in verdict.outcomes.failed}))[:500],
        )


def _observe(metrics: Metrics, verdict: Sorted) -> None:
    for outcome, count in verdict.results.items():
        metrics.sends.labels(outcome.value).inc(count)
    metrics.retries.inc(len(verdict.outcomes.retry))
    metrics.possible_duplicates.inc(verdict.possible_duplicates)
    if verdict.slow_down_until is not None:
        metrics.replans.inc()


def _reply_class(code: int | None) -> str:
    return "none" if code is None else f"{code // 100}xx"
