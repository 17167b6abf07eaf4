"""Waiting for a moment, or for deliveries to finish, without sleeping longer than needed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from bench import dbstats
from bench.stack import Stack


async def until(moment: datetime) -> None:
    """Sleep until ``moment`` (now if it passed)."""
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


async def finished(stack: Stack, total: int, within: float) -> int:
    """Poll until ``total`` deliveries are SENT or FAILED, at most ``within`` seconds; return
    how many were."""
    deadline = time.monotonic() + within
    done = 0
    while time.monotonic() < deadline:
        done = await dbstats.finished(stack.db)
        if done >= total:
            break
        await asyncio.sleep(0.25)
    return done
