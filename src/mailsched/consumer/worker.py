"""The worker loop: take due deliveries from the queue, claim, send, record, acknowledge.

A message is acknowledged only after its delivery's outcome is in the database,
so a worker that dies loses nothing: the queue hands the message out again, or
the dispatcher's reaper does once the lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.consumer.claim import Claim, ClaimRequest, claim
from mailsched.consumer.sender import WorkerDeps, send_claims
from mailsched.domain.shaping import GroupState
from mailsched.errors import MailschedError
from mailsched.queue import Received
from mailsched.store import shaping as groups_store
from mailsched.store.sending import release_queued

log = logging.getLogger(__name__)


class Worker:
    """Consumes due deliveries until told to stop."""

    def __init__(self, deps: WorkerDeps) -> None:
        self._deps = deps
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then finish the batches in flight."""
        cfg = self._deps.config
        slots = asyncio.Semaphore(cfg.inflight_batches)
        watcher = asyncio.create_task(self._watch(stop))
        gauges = asyncio.create_task(self._shaping_gauges()) if self._deps.shaping else None
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
            task.add_done_callback(_log_failure)
            task.add_done_callback(lambda _t: slots.release())
        await self.drain(cfg.shutdown_grace)
        watcher.cancel()
        if gauges is not None:
            gauges.cancel()

    async def _shaping_gauges(self) -> None:
        """Keep the shaping groups' limits in force (slowed, warm-up) in the metrics."""
        deps = self._deps
        while True:
            try:
                rows = await deps.db.run(groups_store.states)
            except MailschedError as exc:
                log.debug("shaping gauges not refreshed: %s", exc)
                rows = {}
            now = deps.clock()
            for group in deps.shaping.groups:
                row = rows.get(group.name)
                state = row.state if row is not None else GroupState()
                for limit in group.limits_at(now, state):
                    window = f"{int(limit.window.total_seconds())}s"
                    deps.metrics.shaping_limit.labels(group.name, window).set(limit.count)
                deps.metrics.shaping_suspended.labels(group.name).set(int(state.suspended(now)))
            await asyncio.sleep(10.0)

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

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
        received = time.time()
        for message in messages:
            if message.dispatched_at is not None:
                self._deps.metrics.queue_lag.observe(max(0.0, received - message.dispatched_at))
            by_campaign[message.delivery.campaign_id].append(message.delivery.delivery_id)
        while True:
            try:
                await self._work(by_campaign)
                break
            except MailschedError as exc:
                # The database or queue went away mid-batch: nothing is recorded
                # for the unfinished part, so doing it again is safe.
                log.warning("batch interrupted, retrying: %s", exc)
                await asyncio.sleep(1.0)
        await self._ack(messages)

    async def _ack(self, messages: Sequence[Received]) -> None:
        try:
            await self._deps.queue.ack(messages)
        except MailschedError as exc:
            # The outcomes are in the database, so nothing is lost: the queue keeps
            # these acknowledgements for its next commit, and a message that comes
            # again before then is found done by its claim.
            log.warning(
                "could not acknowledge %d messages, left for the next commit: %s",
                len(messages),
                exc,
            )

    async def _claim(self, deliveries: dict[int, list[int]]) -> dict[int, Claim]:
        deps = self._deps
        request = ClaimRequest(
            deliveries=deliveries,
            now=deps.clock(),
            owner=deps.owner,
            lease=deps.config.lease,
            hold=deps.config.hold,
            window=deps.window,
            shaping=deps.shaping,
            margin=deps.margin,
            ahead=deps.config.ahead,
        )
        claims = await deps.db.run(lambda conn: claim(conn, request))
        for campaign_id, result in claims.items():
            for group, count in result.held.items():
                deps.metrics.shaping_held.labels(group).inc(count)
            if result.replanned:
                deps.metrics.replans.inc()
                log.info(
                    "campaign %d fell behind: %d deliveries re-planned",
                    campaign_id,
                    result.replanned,
                )
        return claims

    async def _work(self, deliveries: dict[int, list[int]]) -> None:
        """Claim a batch's deliveries in one transaction and send what may go now; ask
        again about what the rules held back when its time comes, all the campaigns
        due by then in one claim again (a batch of a thousand campaigns whose messages
        came a little early is a few claims, not a thousand). Each is asked about a
        little ahead of its time (``ahead``), so that the claim's round trip is over by
        then and the send goes at its time."""
        deps = self._deps
        asked = deps.clock()
        claims = await self._claim(deliveries)
        sends = [asyncio.create_task(send_claims(deps, list(claims.values())))]
        try:
            held = _held(claims)
            # Those already asked within the horizon, and held (a send of theirs was
            # in flight, say): asked again at their moment, not at once again.
            late = _within(held, asked + deps.config.ahead)

            def ask_at(cid: int) -> datetime:
                until = held[cid][0]
                return until if cid in late else until - deps.config.ahead

            while held:
                if await self._stop_within(min(map(ask_at, held))):
                    # Shutting down: hand what we were waiting for back to the dispatcher.
                    ids = [i for _, waiting in held.values() for i in waiting]
                    await self._release(ids)
                    return
                asked = deps.clock()
                due = {cid: held[cid][1] for cid in held if ask_at(cid) <= asked}
                if not due:
                    continue  # the timer fired a little early
                claims = await self._claim(due)
                sends.append(asyncio.create_task(send_claims(deps, list(claims.values()))))
                again = _held(claims)
                late = (late - due.keys()) | _within(again, asked + deps.config.ahead)
                held = {cid: w for cid, w in held.items() if cid not in due} | again
        finally:
            # Whatever was admitted is sent and recorded, even when the rest failed.
            await asyncio.gather(*sends)

    async def _release(self, ids: list[int]) -> None:
        """Hand deliveries this worker waited for back to the dispatcher."""
        now = self._deps.clock()

        async def work(conn: AsyncConnection) -> None:
            await release_queued(conn, ids, now)

        await self._deps.db.run(work)

    async def _stop_within(self, until: datetime) -> bool:
        """Wait until ``until``; true if the worker was told to stop meanwhile."""
        delay = max(0.0, (until - self._deps.clock()).total_seconds())
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            return False
        return True


def _log_failure(task: asyncio.Task[None]) -> None:
    """Nothing awaits a batch's task: an error it did not expect is reported here."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("a batch failed unexpectedly", exc_info=exc)


def _within(held: dict[int, tuple[datetime, list[int]]], horizon: datetime) -> set[int]:
    """The held campaigns whose moment comes by ``horizon``."""
    return {cid for cid, (until, _) in held.items() if until <= horizon}


def _held(claims: dict[int, Claim]) -> dict[int, tuple[datetime, list[int]]]:
    """The deliveries the claims held back, by campaign, with when to ask again."""
    return {cid: (c.wait_until, c.waiting) for cid, c in claims.items() if c.wait_until is not None}
