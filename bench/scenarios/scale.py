"""4. Scale: RSS and the dispatcher's claim query as the backlog of future deliveries grows."""

from __future__ import annotations

import shutil
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
#: Room a backlog row takes in MariaDB (row and its four indexes: ~200 bytes measured
#: at 10M), with a margin; a size that would leave the disk less than twice that free
#: is skipped rather than filling a disk other people's servers share.
ROW_BYTES = 400


async def run(
    servers: Servers, workdir: Path, sink: SmtpSink, sizes: list[int], settings: dict[str, str]
) -> dict[str, Any]:
    """Grow the backlog (rows generated in MariaDB, weeks ahead) to each size; at each, send a
    probe campaign through api + worker while sampling their RSS, then time ``claim_due``."""
    points: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    async with Stack(servers, workdir, common=settings) as stack, http_client() as client:
        api = stack.start("api")
        worker = stack.start("worker", smtp_url=sink.url)
        first = datetime.now(UTC) + timedelta(days=14)
        backlog = 0
        for step, size in enumerate(sizes):
            free = await _free_bytes(stack)
            if free < 2 * ROW_BYTES * (size - backlog):
                skipped.append({"backlog": size, "disk_free_gb": round(free / 1e9, 1)})
                print(f"  scale {size}: skipped, {free / 1e9:.1f} GB free", flush=True)
                break
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
                    "table_gb": round(await dbstats.table_bytes(stack.db, "deliveries") / 1e9, 2),
                    "disk_free_gb_before": round(free / 1e9, 1),
                    "rss_mib": {k: round(v, 1) for k, v in rss.peak_mib.items()},
                    "rss_before_probe_mib": {k: round(v, 1) for k, v in before.items()},
                    "claim_due_ms": claim["median_ms"],
                    "claim_due_max_ms": claim["max_ms"],
                    "explain": claim["explain"],
                }
            )
            print(
                f"  scale {size}: inserted in {insert_s:.0f} s, {points[-1]['rss_mib']} "
                f"claim {claim['median_ms']} ms",
                flush=True,
            )
    return {"points": points, "probe": PROBE, "skipped": skipped}


async def _free_bytes(stack: Stack) -> int:
    """Free bytes on the disk of MariaDB's data directory (the server runs on this machine)."""
    datadir = await dbstats.server_variable(stack.db, "datadir")
    return shutil.disk_usage(datadir).free
