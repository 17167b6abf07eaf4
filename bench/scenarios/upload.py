"""5. Upload: a draft's recipients streamed as NDJSON, then scheduled, on MariaDB."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.client import campaign_body, far_future, http_client
from bench.procs import PeakRss
from bench.stack import Servers, Stack, port_of

#: The bytes of body sent at a time (a client's write; the server reads what comes).
_CHUNK_ROWS = 2_000


async def _ndjson(size: int) -> AsyncIterator[bytes]:
    """``size`` recipients with a name and a variable, about 75 bytes a line."""
    for start in range(0, size, _CHUNK_ROWS):
        yield "".join(
            f'{{"email":"user{i}@example.com","name":"User {i}","vars":{{"n":{i}}}}}\n'
            for i in range(start, min(size, start + _CHUNK_ROWS))
        ).encode()


async def run(servers: Servers, workdir: Path, sizes: list[int]) -> dict[str, Any]:
    """For each size: a fresh API and database, a draft, its upload and its schedule."""
    results: list[dict[str, Any]] = []
    for size in sizes:
        async with Stack(servers, workdir) as stack, http_client() as client:
            proc = stack.start("api", max_recipients=str(max(sizes)))
            base = f"http://127.0.0.1:{port_of(proc)}/api/v1/email/campaign"
            headers = {"Authorization": f"Bearer {stack.api_key}"} if stack.api_key else {}
            draft = json.loads(campaign_body(1, start=far_future(), tag="draft"))
            del draft["recipients"]
            created = await client.post(base, json={**draft, "draft": True}, headers=headers)
            created.raise_for_status()
            campaign_id = created.json()["campaignId"]
            sent = 0

            async def counted(rows: int = size) -> AsyncIterator[bytes]:
                nonlocal sent
                async for chunk in _ndjson(rows):
                    sent += len(chunk)
                    yield chunk

            with PeakRss({"api": proc}) as rss:
                started = time.perf_counter()
                uploaded = await client.post(
                    f"{base}/{campaign_id}/recipients",
                    content=counted(),
                    headers={**headers, "Content-Type": "application/x-ndjson"},
                    timeout=600,
                )
                upload_s = time.perf_counter() - started
                uploaded.raise_for_status()
                scheduled = await client.post(
                    f"{base}/{campaign_id}/schedule", headers=headers, timeout=600
                )
                total_s = time.perf_counter() - started
                scheduled.raise_for_status()
            added = uploaded.json()["added"]
            results.append(
                {
                    "recipients": size,
                    "added": added,
                    "body_mb": round(sent / 1e6, 1),
                    "upload_s": round(upload_s, 2),
                    "schedule_s": round(total_s - upload_s, 2),
                    "total_s": round(total_s, 2),
                    "rows_per_s": round(size / upload_s),
                    "peak_rss_mib": round(rss.peak_mib["api"], 1),
                }
            )
            print(
                f"  upload {size:,} ({sent / 1e6:.0f} MB): {upload_s:.2f} s, schedule "
                f"{total_s - upload_s:.2f} s, API peak RSS {rss.peak_mib['api']:.0f} MiB",
                flush=True,
            )
    return {"results": results}
