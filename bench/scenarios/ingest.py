"""1. Ingest: time from POST to 201 for big campaigns, on both stacks, in real processes."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.client import THIRTY_ZONES, campaign_body, far_future, http_client, post
from bench.procs import PeakRss
from bench.stack import Servers, Stack, port_of

STACKS = {"mariadb+kafka": ("api", False), "sqlite": ("run", True)}


async def run(servers: Servers, workdir: Path, sizes: list[int], repeats: int) -> dict[str, Any]:
    """For each stack: a fresh process and database, a warm-up POST, then each size, and
    the largest again with a sending calendar in each recipient's zone, over 30 zones."""
    results: list[dict[str, Any]] = []
    commands: list[str] = []
    for stack_name, (command, sqlite) in STACKS.items():
        async with Stack(servers, workdir, sqlite=sqlite) as stack, http_client() as client:
            proc = stack.start(command, outbox_dir=str(workdir / "outbox"))
            commands.append(proc.shell())
            port = port_of(proc)
            await post(
                client, port, campaign_body(10, start=far_future(), tag="warm"), stack.api_key
            )
            cases = [(size, ()) for size in sizes] + [(max(sizes), THIRTY_ZONES)]
            for size, zones in cases:
                tag = f"z{size}" if zones else f"n{size}"
                body = campaign_body(size, start=far_future(), tag=tag, zones=zones)
                times = []
                with PeakRss({"api": proc}) as rss:
                    for _ in range(repeats):
                        times.append((await post(client, port, body, stack.api_key)).seconds)
                best = statistics.median(times)
                results.append(
                    {
                        "stack": stack_name,
                        "recipients": size,
                        "calendar_zones": len(zones),
                        "seconds": round(best, 3),
                        "recipients_per_s": round(size / best),
                        "runs": len(times),
                        "peak_rss_mib": round(rss.peak_mib["api"], 1),
                    }
                )
                what = f"{size} over {len(zones)} zones" if zones else str(size)
                print(f"  ingest {stack_name} {what}: {best:.3f} s", flush=True)
    return {"results": results, "commands": commands}
