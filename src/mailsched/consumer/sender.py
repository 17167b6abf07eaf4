"""Send the deliveries of a batch's claims, and record each outcome soon after it is known.

Outcomes are written every few tens of milliseconds, not once the whole batch is
done: a worker that dies then leaves only the sends of that moment in doubt,
not every send of its batch. Each write covers every campaign of the batch in
one transaction of a few statements. Writing is retried while the lease lasts,
so a short database outage does not turn finished sends into re-sends.

A delivery that failed for good gets its dead letter in that same transaction,
and every outcome its event (the outboxes, see :mod:`mailsched.producer.relay`):
the queue is not called here, so a topic that is down can neither lose one nor
abandon the rest of the batch.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import WorkerConfig
from mailsched.consumer.claim import Claim
from mailsched.consumer.letters import LetterFactory
from mailsched.consumer.outcomes import Attempt, SendResult, Sorted, merge_states, sort_results
from mailsched.domain.model import Campaign
from mailsched.domain.shaping import GroupState, Shaping
from mailsched.errors import LeaseLost, SendError, SendExpired, StoreError
from mailsched.mail import Mailer
from mailsched.metrics import Metrics
from mailsched.queue import DeliveryQueue
from mailsched.store import shaping as groups_store
from mailsched.store.campaigns import complete_finished
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
    shaping: Shaping = field(default_factory=Shaping)
    #: A semaphore per shaping group with ``max_connections``: its sends at once here.
    connections: Mapping[str, asyncio.Semaphore] = field(default_factory=dict)
    #: The room a re-plan leaves for each send's answer (``MAILSCHED_PLAN_MARGIN_SECONDS``).
    margin: timedelta = timedelta(0)

    @staticmethod
    def connection_limits(shaping: Shaping) -> dict[str, asyncio.Semaphore]:
        return {
            g.name: asyncio.Semaphore(g.max_connections)
            for g in shaping.groups
            if g.max_connections is not None
        }


def lease_margin(lease: timedelta) -> timedelta:
    """How long before its lease ends a send may no longer start."""
    return min(timedelta(seconds=5), lease / 4)


async def send_claims(deps: WorkerDeps, claims: Sequence[Claim]) -> None:
    """Send every admitted delivery of ``claims``, recording outcomes as they come in."""
    pending: set[asyncio.Task[Attempt]] = set()
    leases: dict[int, datetime] = {}
    for claim in claims:
        campaign, lease_until, claimed_at = claim.campaign, claim.lease_until, claim.claimed_at
        if not claim.admitted or campaign is None or lease_until is None or claimed_at is None:
            continue
        leases[campaign.id] = lease_until
        for i, row in enumerate(claim.admitted):
            seq = claim.first_seq + i
            # Admitted ahead of its time, a send waits for it.
            start = claim.starts[i] if claim.starts else claimed_at
            send = _send_one(deps, campaign, seq, row, lease_until, start)
            pending.add(asyncio.create_task(send))
            if not row.attempts:
                # Against the first plan: a re-plan must not hide drift. A retry's
                # wait is no lateness of the scheduler's.
                late = (start - row.first_planned_at).total_seconds()
                deps.metrics.lateness.observe(max(0.0, late))
    while pending:
        done, pending = await asyncio.wait(pending, timeout=_FLUSH_SECONDS)
        if done:
            await _record(deps, [task.result() for task in done], min(leases.values()))


async def _send_one(
    deps: WorkerDeps,
    campaign: Campaign,
    seq: int,
    row: Claimable,
    lease_until: datetime,
    start: datetime,
) -> Attempt:
    wait = (start - deps.clock()).total_seconds()
    if wait > 0:
        await asyncio.sleep(wait)
    if not deps.connections:
        return await _send_now(deps, campaign, seq, row, lease_until)
    groups = deps.shaping.groups_for(row.recipient)
    limits = [deps.connections[g.name] for g in groups if g.name in deps.connections]
    for limit in limits:
        await limit.acquire()
    try:
        return await _send_now(deps, campaign, seq, row, lease_until)
    finally:
        for limit in limits:
            limit.release()


async def _send_now(
    deps: WorkerDeps, campaign: Campaign, seq: int, row: Claimable, lease_until: datetime
) -> Attempt:
    margin = lease_margin(deps.config.lease)
    not_after = lease_until - margin
    started = time.perf_counter()
    try:
        # Inside the try: a message that cannot be made fails this delivery alone.
        letter = await deps.letters.build(
            campaign, row.id, row.recipient, deps.clock(), name=row.name, variables=row.vars
        )
        accepted = await deps.mailer.send(letter.expiring(not_after, not_after + margin))
    except SendExpired:
        return Attempt(seq, row, None, campaign)
    except SendError as exc:
        log.info("campaign %d delivery %d: %s", campaign.id, row.id, exc)
        deps.metrics.smtp_replies.labels(_reply_class(exc.code)).inc()
        return Attempt(seq, row, SendResult(deps.clock(), exc, relay=exc.relay), campaign)
    except Exception as exc:  # a bug or an untranslated error: retry, and say so loudly
        log.exception("campaign %d delivery %d: unexpected error", campaign.id, row.id)
        deps.metrics.smtp_replies.labels("none").inc()
        return Attempt(seq, row, SendResult(deps.clock(), exc), campaign)
    finally:
        deps.metrics.send_seconds.observe(time.perf_counter() - started)
    deps.metrics.smtp_replies.labels("2xx").inc()
    result = SendResult(deps.clock(), reply=accepted.reply, relay=accepted.relay)
    return Attempt(seq, row, result, campaign)


async def _record(deps: WorkerDeps, attempts: list[Attempt], lease_until: datetime) -> None:
    """Write ``attempts`` (of any campaigns) in one transaction, retried until
    ``lease_until``, then report them."""
    campaigns = {a.campaign.id: a.campaign for a in attempts}
    groups: dict[int, list[Attempt]] = {}
    for attempt in attempts:
        groups.setdefault(attempt.campaign.id, []).append(attempt)
    now = deps.clock()
    verdicts = {
        cid: sort_results(found, deps.config, now, random.random, deps.shaping)
        for cid, found in groups.items()
    }
    lost = await _write(deps, campaigns, verdicts, lease_until, len(attempts))
    if lost is None:
        return
    if lost:
        log.warning("%d outcomes not recorded, their lease was taken over", lost)
    for cid, verdict in verdicts.items():
        _report(deps, cid, verdict)


async def _write(
    deps: WorkerDeps,
    campaigns: Mapping[int, Campaign],
    verdicts: Mapping[int, Sorted],
    lease_until: datetime,
    count: int,
) -> int | None:
    """Record the verdicts; return how many rows were no longer held, or ``None`` when
    the database stayed out of reach until the lease ran out."""
    users = {cid: c.user_id for cid, c in campaigns.items()}
    careful = False

    async def work(conn: AsyncConnection) -> int:
        now = deps.clock()
        outcomes = {c: v.outcomes for c, v in verdicts.items()}
        lost = await record(conn, deps.owner, outcomes, now, users, careful=careful)
        for cid, verdict in verdicts.items():
            if verdict.slow_down_until is not None:
                # The server asked us to slow down: the whole campaign waits, not just
                # the deliveries it refused.
                await replan(
                    conn,
                    campaigns[cid],
                    deps.window,
                    verdict.slow_down_until,
                    margin=deps.margin,
                )
        await complete_finished(conn, list(verdicts), now)
        return lost

    while True:
        try:
            lost = await deps.db.run(work)
            await _react(deps, verdicts.values())
            return lost
        except LeaseLost:
            careful = True  # a row was taken over: write again, those still held alone
        except StoreError as exc:
            if deps.clock() >= lease_until:
                # The reaper takes these over now; their slots count as in doubt.
                log.error("%d outcomes lost with the lease: %s", count, exc)
                return None
            log.warning("recording %d outcomes failed, retrying: %s", count, exc)
            await asyncio.sleep(0.5)


async def _react(deps: WorkerDeps, verdicts: Iterable[Sorted]) -> None:
    """Slow or suspend the shaping groups replies asked to wait, in a transaction of its
    own once the outcomes are in: a group's row is locked by every claim into it, and
    the outcomes must not wait for it (nor deadlock with a claim that re-plans)."""
    shaped = _groups(verdicts)
    if not shaped:
        return
    try:
        await deps.db.run(lambda conn: groups_store.react(conn, shaped, deps.clock()))
    except StoreError as exc:
        # Advisory: the retries it would have paused come back, and are answered again.
        log.warning("shaping groups %s not slowed: %s", ", ".join(shaped), exc)


def _groups(verdicts: Iterable[Sorted]) -> dict[str, GroupState]:
    merged: dict[str, GroupState] = {}
    for verdict in verdicts:
        for name, change in verdict.groups.items():
            merged[name] = merge_states(merged.get(name), change)
    return merged


def _report(deps: WorkerDeps, campaign_id: int, verdict: Sorted) -> None:
    """Metrics, and a warning for sends in doubt."""
    _observe(deps.metrics, verdict)
    if verdict.possible_duplicates:
        log.warning(
            "campaign %d: %d sends may have been delivered before the connection broke",
            campaign_id,
            verdict.possible_duplicates,
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
