"""The worker's wait for held deliveries: asked about a little ahead of their moment,
once; a campaign the claim held again within the horizon waits for its moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailsched.consumer.claim import Claim
from mailsched.consumer.sender import WorkerDeps
from mailsched.consumer.worker import Worker
from mailsched.queue.memory import MemoryQueue
from tests.support.workers import loop_deps

AHEAD = timedelta(milliseconds=250)


class Scripted(Worker):
    """Every claim holds the campaign until ``until``, then admits nothing more."""

    def __init__(self, deps: WorkerDeps, until: datetime) -> None:
        super().__init__(deps)
        self.until = until
        self.asked: list[datetime] = []

    async def _claim(self, deliveries: dict[int, list[int]]) -> dict[int, Claim]:
        now = self._deps.clock()
        self.asked.append(now)
        if now >= self.until:
            return {7: Claim()}
        # Held within the horizon: in flight, say, so not admitted ahead.
        return {7: Claim(waiting=[1], wait_until=self.until)}


def _deps() -> WorkerDeps:
    return loop_deps(MemoryQueue(), hold=timedelta(seconds=2), ahead=AHEAD)


async def test_a_campaign_held_again_within_the_horizon_is_asked_at_its_moment() -> None:
    until = datetime.now(UTC) + AHEAD / 2
    worker = Scripted(_deps(), until)
    await worker._work({7: [1]})
    # The first claim, then one at the moment: not a claim after claim until then.
    assert len(worker.asked) == 2
    assert worker.asked[1] >= until


async def test_a_held_campaign_is_asked_ahead_of_its_moment() -> None:
    until = datetime.now(UTC) + 3 * AHEAD
    worker = Scripted(_deps(), until)
    worker.until = until
    await worker._work({7: [1]})
    assert until - AHEAD <= worker.asked[1] < until
