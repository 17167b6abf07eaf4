"""The dispatcher's wake-up: one that arrives while a pass runs is not lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from mailsched.config import DispatcherConfig
from mailsched.metrics import Metrics
from mailsched.producer.dispatcher import Dispatcher, Reaped

# Longer than any test runs: a second pass can only come from a wake-up.
_HOUR = 3600.0


class GatedDispatcher(Dispatcher):
    """A dispatcher whose first pass waits on ``release``; no database, no queue."""

    def __init__(self) -> None:
        config = DispatcherConfig(
            interval=_HOUR,
            lookahead=timedelta(0),
            batch_size=100,
            requeue_after=timedelta(hours=1),
            reap_interval=_HOUR,
        )
        super().__init__(
            cast(Any, None), cast(Any, None), config, lambda: datetime.now(UTC), Metrics()
        )
        self.passes = 0
        self.in_first_pass = asyncio.Event()
        self.release = asyncio.Event()
        self.second_pass = asyncio.Event()

    async def dispatch_once(self) -> int:
        self.passes += 1
        if self.passes == 1:
            self.in_first_pass.set()
            await self.release.wait()
        else:
            self.second_pass.set()
        return 0

    async def reap_once(self) -> Reaped:
        return Reaped(0, 0)

    async def sample(self) -> None:
        return None


async def test_a_wake_during_a_pass_starts_another_pass() -> None:
    dispatcher = GatedDispatcher()
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        await dispatcher.in_first_pass.wait()
        dispatcher.wake()  # a campaign was created while the pass ran
        dispatcher.release.set()
        # Without the wake-up the next pass would be an hour away; the bound is
        # only there so that a lost wake-up fails instead of hanging.
        await asyncio.wait_for(dispatcher.second_pass.wait(), 10)
    finally:
        stop.set()
        dispatcher.release.set()
        await running
    assert dispatcher.passes >= 2


class SlowSample(GatedDispatcher):
    """The gauge's count takes until ``counted`` is set (a table of millions of rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = asyncio.Event()
        self.counted = asyncio.Event()

    async def sample(self) -> None:
        self.counting.set()
        await self.counted.wait()


async def test_a_slow_count_for_the_gauge_holds_up_no_pass() -> None:
    """Counting every delivery by status took 0.6 s for 2M rows here: between passes, it
    would have held every delivery due meanwhile."""
    dispatcher = SlowSample()
    dispatcher.release.set()  # the first pass does not wait
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        await dispatcher.counting.wait()
        dispatcher.wake()
        # The bound is there so that a pass held up by the count fails, not hangs.
        await asyncio.wait_for(dispatcher.second_pass.wait(), 10)
    finally:
        stop.set()
        dispatcher.counted.set()
        await running
    assert dispatcher.passes >= 2
