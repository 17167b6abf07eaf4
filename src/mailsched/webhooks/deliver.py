"""The webhook deliverer: claim due messages, POST them, record what happened.

At least once. A pass claims due messages in one short transaction (``FOR UPDATE
SKIP LOCKED``, so several ``mailsched webhooks`` processes share the work) and
leases them for the request's timeout plus a margin; each request then runs in
its own task, and its outcome is written in its own transaction:

* 2xx: delivered, the message is finished;
* 410: the endpoint is disabled, and its waiting messages are dropped;
* anything else (3xx, since redirects are not followed, 4xx, 5xx, a timeout, a
  refused or unreachable address): retried after the next step of
  ``retry_schedule`` (±10%), and given up after the last.

A process that dies mid-request leaves its messages leased: they come back when
the lease ends. Nothing waits in memory but the requests in flight: at most
``concurrency`` in all, and at most :data:`PER_ENDPOINT` per endpoint, so a
receiver that hangs holds a few slots for one timeout and the others go on. Due
endpoints are served longest-waiting first, and a served endpoint goes to the back
(its claimed messages are due again only at their lease's end).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import WebhookConfig
from mailsched.domain.events import Event
from mailsched.errors import StoreError, UnsafeUrl
from mailsched.metrics import Metrics
from mailsched.store import webhook_messages as messages
from mailsched.store import webhooks as endpoints
from mailsched.store.db import Database
from mailsched.store.webhook_messages import Claim, Target
from mailsched.webhooks import payloads, signing, transport
from mailsched.webhooks.retries import retry_delay
from mailsched.webhooks.upkeep import Upkeep

log = logging.getLogger(__name__)

#: Requests in flight to one endpoint from one process.
PER_ENDPOINT = 4
#: A claim's lease beyond the request's timeout: time to write its outcome.
LEASE_MARGIN = 60.0
#: Bytes of a response body read (and ignored) before the connection is dropped.
BODY_CAP = 4096
#: Seconds between passes when nothing was due.
POLL = 0.5
#: Waiting messages of a disabled or deleted endpoint dropped per pass.
DROP_CHUNK = 5000
_GONE = "the endpoint answered 410 Gone"


@dataclass(frozen=True, slots=True)
class _Job:
    target: Target
    claim: Claim
    events: list[Event]


@dataclass(frozen=True, slots=True)
class _Result:
    status_code: int | None
    status_class: str
    seconds: float
    error: str | None = None


class WebhookDeliverer:
    """Delivers webhook messages until stopped (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        config: WebhookConfig,
        clock: Callable[[], datetime],
        metrics: Metrics,
        *,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._db = db
        self._config = config
        self._clock = clock
        self._metrics = metrics
        self._uniform = uniform
        self._client = transport.client(
            config.allow_private_urls, config.timeout, config.concurrency
        )
        self._per_endpoint = max(1, min(PER_ENDPOINT, config.concurrency))
        self._lease = timedelta(seconds=config.timeout + LEASE_MARGIN)
        self._inflight: dict[int, int] = {}
        self._tasks: set[asyncio.Task[bool]] = set()
        self._wake = asyncio.Event()
        self._upkeep = Upkeep(db, clock, metrics)

    def wake(self) -> None:
        """Look for due messages now rather than at the next poll (after a fan-out)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then wait for the requests in flight (at most
        one timeout) and cancel what is left, whose leases bring it back."""
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            started = 0
            try:
                started = await self._start_due()
                await self._upkeep()
                failures = 0
            except StoreError as exc:
                failures += 1
                log.warning("webhook pass failed (%d in a row): %s", failures, exc)
            full = len(self._tasks) >= self._config.concurrency
            if started == 0 or full or failures:
                pause = min(30.0, POLL * 2**failures) if failures else POLL
                await self._idle(stop, 3600.0 if full else pause)
        await self._drain(self._config.timeout + 1.0)

    async def deliver_once(self) -> int:
        """One pass: claim what is due, send it, record it; return the requests made."""
        await self._start_due()
        results = await asyncio.gather(*self._tasks)
        return sum(results)

    async def aclose(self) -> None:
        """Cancel what is in flight and close the HTTP client."""
        await self._drain(0.0)
        await self._client.aclose()

    async def _idle(self, stop: asyncio.Event, seconds: float) -> None:
        waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _drain(self, grace: float) -> None:
        if not self._tasks:
            return
        pending = set(self._tasks)
        if grace > 0:
            _done, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _start_due(self) -> int:
        free = self._config.concurrency - len(self._tasks)
        if free <= 0:
            return 0
        now = self._clock()
        busy = {e for e, n in self._inflight.items() if n >= self._per_endpoint}

        async def work(conn: AsyncConnection) -> list[_Job]:
            return await self._claim(conn, now, busy, free)

        jobs = await self._db.run(work)
        for job in jobs:
            endpoint_id = job.target.id
            self._inflight[endpoint_id] = self._inflight.get(endpoint_id, 0) + 1
            task = asyncio.create_task(self._deliver(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(jobs)

    async def _claim(
        self, conn: AsyncConnection, now: datetime, busy: set[int], free: int
    ) -> list[_Job]:
        # No state of self changes here: db.run may run this again after a deadlock.
        due = await messages.due_endpoints(conn, now, busy, free)
        targets = await messages.targets(conn, due)
        until = now + self._lease
        claimed: list[tuple[Target, Claim]] = []
        for endpoint_id in due:
            target = targets.get(endpoint_id)
            if target is None or not target.live:
                dropped = await messages.drop_pending(conn, endpoint_id, DROP_CHUNK)
                log.info("endpoint %d is gone: %d waiting messages dropped", endpoint_id, dropped)
                continue
            room = min(free - len(claimed), self._per_endpoint - self._inflight.get(endpoint_id, 0))
            if room <= 0:
                break
            if target.batch:
                key = secrets.randbits(62) or 1
                one = await messages.claim_batch(
                    conn, endpoint_id, now, self._config.max_batch, until, key
                )
                claimed.extend([] if one is None else [(target, one)])
            else:
                got = await messages.claim_single(conn, endpoint_id, now, room, until)
                claimed.extend((target, claim) for claim in got)
        found = await messages.events_by_id(conn, {i for _, c in claimed for i in c.event_ids})
        return [
            _Job(target, claim, [found[i] for i in claim.event_ids if i in found])
            for target, claim in claimed
        ]

    async def _deliver(self, job: _Job) -> bool:
        """Send one request and record its outcome; true if a request was made."""
        endpoint_id = job.target.id
        try:
            if not job.events:
                # Every event it carried was pruned: nothing left to send.
                await self._db.run(lambda conn: messages.finish(conn, job.claim, self._clock()))
                return False
            if job.claim.batch_key is None:
                message_id, body = payloads.single(job.events[0])
            else:
                message_id, body = payloads.batch(job.claim.batch_key, job.events)
            at = self._clock()
            headers = signing.headers(job.target.secret, message_id, at, body)
            result = await self._send(job.target.url, body, headers)
            self._metrics.webhook_attempts.labels(result.status_class).inc()
            self._metrics.webhook_seconds.observe(result.seconds)
            await self._record(job, message_id, at, result)
            return True
        except StoreError as exc:
            # The lease brings the messages back; the request may be repeated.
            log.warning("endpoint %d: outcome not recorded: %s", endpoint_id, exc)
            return True
        except Exception:
            # A bug must not end the deliverer: the lease brings the messages back.
            log.exception("endpoint %d: delivery failed", endpoint_id)
            return False
        finally:
            self._inflight[endpoint_id] -= 1
            if not self._inflight[endpoint_id]:
                del self._inflight[endpoint_id]
            self._wake.set()

    async def _send(self, url: str, body: str, headers: dict[str, str]) -> _Result:
        """POST ``body``; every failure is a result, none is raised."""
        started = time.perf_counter()
        try:
            # The whole request, not each read: a receiver that trickles bytes is cut off.
            async with asyncio.timeout(self._config.timeout):
                return await self._post(url, body, headers, started)
        except (TimeoutError, httpx.TimeoutException):
            return _Result(None, "timeout", time.perf_counter() - started, "timed out")
        except UnsafeUrl as exc:
            return _Result(None, "error", time.perf_counter() - started, f"refused: {exc}")
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return _Result(None, "error", time.perf_counter() - started, error)

    async def _post(self, url: str, body: str, headers: dict[str, str], started: float) -> _Result:
        async with self._client.stream(
            "POST", url, content=body.encode(), headers=headers
        ) as response:
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received >= BODY_CAP:
                    break
        code = response.status_code
        return _Result(code, f"{code // 100}xx", time.perf_counter() - started)

    async def _record(self, job: _Job, message_id: str, at: datetime, result: _Result) -> None:
        claim, endpoint_id = job.claim, job.target.id
        now = self._clock()
        error = result.error
        code = result.status_code
        delay = None
        if code is not None and 200 <= code < 300:
            outcome = "delivered"
        elif code == 410:
            outcome = "gone"
        else:
            delay = retry_delay(self._config.retry_schedule, claim.attempts, self._uniform)
            outcome = "retry" if delay is not None else "given up"
            if delay is None:
                error = f"{error or f'status {code}'}; given up after {claim.attempts} attempts"
        attempt = endpoints.Attempt(
            endpoint_id=endpoint_id,
            message_id=message_id,
            event_id=claim.event_ids[0],
            event_count=len(claim.event_ids),
            attempted_at=at,
            status_code=code,
            duration_ms=round(result.seconds * 1000),
            error=error,
        )

        async def work(conn: AsyncConnection) -> None:
            await endpoints.record_attempts(conn, [attempt])
            if outcome == "retry":
                assert delay is not None
                await messages.retry(conn, claim, now + timedelta(seconds=delay))
                return
            await messages.finish(conn, claim, now)
            if outcome == "gone":
                await endpoints.disable(conn, endpoint_id, now, _GONE)

        await self._db.run(work)
        if outcome == "gone":
            log.warning("endpoint %d answered 410: disabled", endpoint_id)
        elif outcome == "given up":
            self._metrics.webhook_given_up.inc(len(claim.event_ids))
            log.warning(
                "endpoint %d: message %s given up after %d attempts (%s)",
                endpoint_id,
                attempt.message_id,
                claim.attempts,
                error,
            )
