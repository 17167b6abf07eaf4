"""Where a big POST spends its time: timed phases in-process, and a pyinstrument profile."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pyinstrument import Profiler
from pyinstrument.frame import Frame

from bench.client import THIRTY_ZONES, campaign_body, far_future
from bench.paths import scrub
from bench.stack import Servers, Stack
from mailsched.bootstrap import utc_now
from mailsched.domain import calendar
from mailsched.domain.plan import Rules, plan
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.schemas import CampaignRequest

WINDOW = timedelta(hours=1)


async def run(servers: Servers, workdir: Path, size: int, profile_out: Path) -> dict[str, Any]:
    """Each step of a POST's work timed alone on MariaDB, then all of them under pyinstrument.

    In-process, through ``Campaigns.create`` (what the route calls after FastAPI parsed
    and validated the body): HTTP, auth and response encoding are left out.
    """
    body = campaign_body(size, start=far_future(), tag="prof")
    async with Stack(servers, workdir) as stack:
        service = Campaigns(stack.db, WINDOW, utc_now)
        phases = await _phases(service, body)
        profiler = Profiler(interval=0.001, async_mode="enabled")
        profiler.start()
        started = time.perf_counter()
        await service.create(CampaignRequest.model_validate(json.loads(body)))
        total = time.perf_counter() - started
        profiler.stop()
    text = scrub(profiler.output_text(unicode=False, color=False))
    await asyncio.to_thread(profile_out.write_text, text)
    root = profiler.last_session.root_frame() if profiler.last_session else None
    return {
        "recipients": size,
        "phases_s": phases,
        "profiled_s": round(total, 3),
        "top_self": _top_self(root, 12),
        "profile_file": profile_out.name,
    }


async def _phases(service: Campaigns, body: bytes) -> dict[str, float]:
    """JSON parse, validation (pydantic + email-validator), planning alone, then the rest of
    ``Campaigns.create`` (rows, INSERTs, commit)."""
    t0 = time.perf_counter()
    data = json.loads(body)
    t1 = time.perf_counter()
    request = CampaignRequest.model_validate(data)
    t2 = time.perf_counter()
    rules = Rules(timedelta(seconds=request.delay_seconds), request.hourly_limit, WINDOW)
    plan(len(request.recipients), max(request.start_time, datetime.now(UTC)), rules)
    t3 = time.perf_counter()
    await service.create(request)
    t4 = time.perf_counter()
    return {
        "json_parse": round(t1 - t0, 3),
        "validate": round(t2 - t1, 3),
        "plan": round(t3 - t2, 3),
        "store_commit": round(max(0.0, (t4 - t3) - (t3 - t2)), 3),
        **_calendar_phases(len(request.recipients)),
    }


def _calendar_phases(size: int) -> dict[str, float]:
    """Validating and planning the same campaign with a calendar in each recipient's
    zone, over 30 zones: the planning alone is the median of three, from cold
    calendars (their index is built within the first)."""
    body = json.loads(campaign_body(size, start=far_future(), tag="zones", zones=THIRTY_ZONES))
    t0 = time.perf_counter()
    request = CampaignRequest.model_validate(body)
    t1 = time.perf_counter()
    assert request.schedule is not None
    schedule = request.schedule.domain()
    rules = Rules(timedelta(seconds=request.delay_seconds), request.hourly_limit, WINDOW)
    zones = [r.timezone for r in request.recipients]
    start = max(request.start_time, datetime.now(UTC))
    runs = []
    for _ in range(3):
        calendar.calendar.cache_clear()
        began = time.perf_counter()
        calendar.plan_sends(schedule, zones, start, rules, (), random.random)
        runs.append(time.perf_counter() - began)
    return {
        "validate_30_zones": round(t1 - t0, 3),
        "plan_30_zones": round(statistics.median(runs), 3),
    }


def _top_self(root: Frame | None, count: int) -> list[dict[str, Any]]:
    """The functions with the most time of their own (not in callees), in seconds."""
    own: dict[str, float] = defaultdict(float)
    stack = [root] if root else []
    while stack:
        frame = stack.pop()
        children = list(frame.children)
        stack.extend(children)
        if frame.is_synthetic:
            continue
        where = scrub(f"{frame.function} ({frame.file_path_short}:{frame.line_no})")
        own[where] += frame.total_self_time
    ranked = sorted(own.items(), key=lambda item: -item[1])[:count]
    return [{"function": f, "self_s": round(t, 3)} for f, t in ranked]
