"""3. Timeliness: at half each shape's own measured capacity, how late sends are behind their plan.

A shape's capacity is what one worker achieves in a short run of that shape
planned at twice a hint (:func:`capacity`): the shapes cost the worker
differently (``smooth`` claims one delivery per campaign), so half of one
shape's capacity would overload another, or idle it.

Three shapes of the same load, since ``delaySeconds`` is whole seconds:

* ``waves``: a campaign every 100 ms of ``rate/10`` recipients due at once (delay 0, no
  limit): the pipeline's own lateness (dispatcher tick, look-ahead, Kafka, worker), with
  no rule between sends;
* ``smooth``: ``rate`` campaigns with ``delaySeconds: 1``, their starts spread over one
  second, so one email is due every ``1/rate`` s;
* ``bursts``: 10 campaigns with ``hourlyLimit: rate/10`` per a 1-second rate window
  (``MAILSCHED_RATE_WINDOW_SECONDS=1``), starts spread over a second: a burst every 100 ms.

The plan leaves ``MAILSCHED_PLAN_MARGIN_SECONDS`` (``m``) for each send's answer in each
gap and window, so a campaign of ``smooth`` sends every ``1 + m`` s and one of ``bursts``
a burst every ``1 + m`` s: both shapes have ``1 + m`` times as many campaigns, or as big
bursts, to plan ``rate`` emails/s.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import dbstats, waits
from bench.client import campaign_body, far_future, http_client, post_all, posting_time
from bench.sink import SmtpSink
from bench.stack import Servers, Stack, port_of


async def run(
    servers: Servers,
    workdir: Path,
    sink: SmtpSink,
    shape: str,
    rate: int,
    seconds: int,
    settings: dict[str, str],
) -> dict[str, Any]:
    """Post the load ahead of time, let it run, and read send times from the database."""
    step = 1 + float(settings.get("MAILSCHED_PLAN_MARGIN_SECONDS", "0"))
    campaigns = {"smooth": round(rate * step), "bursts": 10, "waves": 10 * seconds}[shape]
    extra = {"MAILSCHED_RATE_WINDOW_SECONDS": "1"} if shape == "bursts" else {}
    async with Stack(servers, workdir, common=settings | extra) as stack, http_client() as client:
        api = stack.start("api")
        stack.start("worker", smtp_url=sink.url)
        lead = campaigns / 100
        if campaigns > 10:
            sample = _bodies(shape, rate, seconds, far_future(), step)[: min(200, campaigns // 10)]
            lead = await posting_time(client, port_of(api), stack.api_key, sample, campaigns)
        base = datetime.now(UTC) + timedelta(seconds=3 + lead)
        bodies = _bodies(shape, rate, seconds, base, step)
        total = sum(b.count(b"@example.com") for b in bodies)
        await post_all(client, port_of(api), stack.api_key, bodies)
        late_start = (datetime.now(UTC) - base).total_seconds()
        await waits.until(base)
        # An overload run drains for longer than it was planned.
        done = await waits.finished(stack, total, within=3 * seconds + 60)
        sent, span = await dbstats.send_span(stack.db)
        late = await dbstats.lateness(stack.db)
    return {
        "shape": shape,
        "campaigns": campaigns,
        "planned_rate_per_s": rate,
        "seconds": seconds,
        "deliveries": total,
        "finished": done,
        "achieved_rate_per_s": round(sent / span) if span else None,
        "posting_overran_start_s": round(max(0.0, late_start), 2),
        "sent_at_late": dbstats.percentiles(late["sent"]),
        "started_at_late": dbstats.percentiles(late["started"]),
        # Against the plan as re-planning left it: the drift the first plan shows.
        "started_at_late_vs_last_plan": dbstats.percentiles(late["replanned"]),
    }


def _bodies(shape: str, rate: int, seconds: int, base: datetime, step: float = 1.0) -> list[bytes]:
    """The campaigns of ``shape`` planning ``rate`` emails/s for ``seconds`` from ``base``,
    each gap and window planned ``step`` s long (a second and the plan's margin)."""
    if shape == "smooth":
        count = round(rate * step)
        return [
            campaign_body(
                round(seconds / step),
                start=base + timedelta(seconds=k * step / count),
                delay=1,
                tag=f"s{k}",
            )
            for k in range(count)
        ]
    if shape == "waves":
        return [
            campaign_body(rate // 10, start=base + timedelta(seconds=k / 10), tag=f"w{k}")
            for k in range(10 * seconds)
        ]
    per = round(rate / 10 * step)
    return [
        campaign_body(
            per * round(seconds / step),
            start=base + timedelta(seconds=k * step / 10),
            hourly_limit=per,
            tag=f"b{k}",
        )
        for k in range(10)
    ]


async def capacity(
    servers: Servers,
    workdir: Path,
    sink: SmtpSink,
    shape: str,
    hint: int,
    seconds: int,
    settings: dict[str, str],
) -> dict[str, Any]:
    """One worker's emails/s on ``shape``: the shape planned at twice ``hint`` (a rate it is
    not expected to reach) for ``seconds``; the rate achieved, first send to last."""
    planned = 2 * max(100, hint)
    result = await run(servers, workdir, sink, shape, planned, seconds, settings)
    achieved = result["achieved_rate_per_s"] or hint
    return {
        "shape": shape,
        "planned_rate_per_s": planned,
        "seconds": seconds,
        "deliveries": result["deliveries"],
        "finished": result["finished"],
        "capacity_per_s": achieved,
        "posting_overran_start_s": result["posting_overran_start_s"],
        # Below the plan by less than 10%: the worker kept up, so this is a floor only.
        "kept_up": achieved >= 0.9 * planned,
    }
