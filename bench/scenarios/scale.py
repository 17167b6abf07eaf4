"""4. Scale: RSS and the dispatcher's claim query as the backlog of future deliveries grows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import dbstats, waits
from bench.client import campaign_body, http_client, post
from bench.procs import PeakRss
from bench.sink import SmtpSink
from bench.stack import Servers, Stack, port_of

PROBE = 2_000  # deliveries due now, sent at each backlog size while RSS is watched
CHUNK = 100_000


async def run(
    servers: Servers, workdir: Path, sink: SmtpSink, sizes: list[int], settings: dict[str, str]
) -> dict[str, Any]:
    """Grow the backlog (SQLAlchemy Core, weeks ahead) to each size; at each, send a probe
    campaign through api + worker while sampling their RSS, then time ``claim_due``."""
    points: list[dict[str, Any]] = []
    async with Stack(servers, workdir, common=settings) as stack, http_client() as client:
        api = stack.start("api")
        worker = stack.start("worker", smtp_url=sink.url)
        first = datetime.now(UTC) + timedelta(days=14)
        backlog = 0
        for step, size in enumerate(sizes):
            insert_s = await dbstats.bulk_backlog(stack.db, size - backlog, CHUNK, first)
            first += timedelta(seconds=size - backlog)
            backlog = size
            before = {"api_dispatcher": api.rss_mib(), "worker": worker.rss_mib()}
            with PeakRss({"api_dispatcher": api, "worker": worker}) as rss:
                await post(
                    client, port_of(api), campaign_body(PROBE, tag=f"probe{step}"), stack.api_key
                )
                await waits.finished(stack, PROBE * (step + 1), within=120)
            claim = await dbstats.time_claim_due(stack.db)
            points.append(
                {
                    "backlog": size,
                    "insert_s": round(insert_s, 1),
                    "rss_mib": {k: round(v, 1) for k, v in rss.peak_mib.items()},
                    "rss_before_probe_mib": {k: round(v, 1) for k, v in before.items()},
                    "claim_due_ms": claim["median_ms"],
                    "claim_due_max_ms": claim["max_ms"],
                    "explain": claim["explain"],
                }
            )
            print(
                f"  scale {size}: {points[-1]['rss_mib']} claim {claim['median_ms']} ms", flush=True
            )
    return {"points": points, "probe": PROBE}
