"""One bench run: every scenario in order, each on its own fresh stack.

A scenario that fails (the shared servers restarted under it, say) is recorded
with its error and the others still run, so a long run is never lost whole.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import ingest_profile, machine
from bench.paths import RESULTS, scrub
from bench.procs import free_port
from bench.profiles import Profile
from bench.scenarios import head_of_line, ingest, scale, throughput, timeliness, upload
from bench.sink import SmtpSink, smtp_source_rate
from bench.stack import Servers

#: smtp-source's message body, about the size of the bench's letters with their headers.
LETTER_BYTES = 500
#: smtp-source's sessions for the ceiling: the issue's ``smtp-source -d -s 20``, whatever
#: number of connections the workers are given.
SOURCE_SESSIONS = 20
SCENARIOS = ("ingest", "throughput", "timeliness", "scale", "upload", "head_of_line")


class _Run:
    """The state one run shares between its scenarios."""

    def __init__(self, profile: Profile, settings: dict[str, str], stamp: str, work: Path) -> None:
        self.profile = profile
        self.settings = settings
        self.servers = Servers.from_env()
        self.work = work
        self.profiles = RESULTS / f"{stamp}-profiles"
        self.sink = SmtpSink(free_port())
        self.out: dict[str, Any] = {}

    async def ingest(self) -> None:
        p = self.profile
        self.out["ingest"] = await ingest.run(
            self.servers, self.work, list(p.ingest_sizes), p.ingest_repeats
        )
        self.profiles.mkdir(parents=True, exist_ok=True)
        self.out["ingest_profile"] = await ingest_profile.run(
            self.servers, self.work, p.profile_ingest, self.profiles / "ingest-profile.txt"
        )

    async def throughput(self) -> None:
        p = self.profile
        ceiling = smtp_source_rate(self.sink, p.ceiling_messages, SOURCE_SESSIONS, LETTER_BYTES)
        self.out["ceiling"] = {
            "command": ceiling.command,
            "messages": ceiling.messages,
            "emails_per_s": round(ceiling.per_second),
        }
        large = throughput.ten_large(p.throughput)
        runs = [await self._throughput(large, 1)]
        # Right after the ten large campaigns, so that the ratio compares like with like.
        small = throughput.many_small(p.throughput, p.small_campaign)
        self.out["throughput_many_small"] = await self._throughput(small, 1)
        runs.append(await self._throughput(large, 2))
        # One worker command with a process per core, on this 2-core machine.
        runs.append(await self._throughput(large, 1, processes=2))
        self.out["throughput"] = runs
        print("  profiling worker and dispatcher (py-spy)", flush=True)
        self.profiles.mkdir(parents=True, exist_ok=True)
        profiled = await throughput.run(
            self.servers,
            self.work,
            self.sink,
            throughput.ten_large(p.profile_throughput),
            1,
            self.settings,
            self.profiles,
        )
        self.out["throughput_profile"] = {
            k: profiled[k] for k in ("deliveries", "emails_per_s", "profiles")
        }

    async def _throughput(
        self, mix: throughput.Mix, workers: int, processes: int = 1
    ) -> dict[str, Any]:
        result = await throughput.run(
            self.servers, self.work, self.sink, mix, workers, self.settings, processes=processes
        )
        who = f"{workers} worker(s)" if processes == 1 else f"1 worker --processes {processes}"
        print(f"  {mix.name}, {who}: {result['emails_per_s']} emails/s", flush=True)
        return result

    async def timeliness(self) -> None:
        large = (self.out.get("throughput") or [{}])[0].get("emails_per_s") or 2000
        small = self.out.get("throughput_many_small", {}).get("emails_per_s") or large
        self.out["timeliness"] = []
        for shape in self.profile.timeliness_shapes:
            capacity = await timeliness.capacity(
                self.servers,
                self.work,
                self.sink,
                shape,
                small if shape == "smooth" else large,
                self.profile.capacity_seconds,
                self.settings,
            )
            half = capacity["capacity_per_s"] / 2
            rate = max(10, round(half / 10) * 10)
            print(f"  {shape}: capacity {2 * half:.0f}/s, run at {rate}/s", flush=True)
            result = await timeliness.run(
                self.servers,
                self.work,
                self.sink,
                shape,
                rate,
                self.profile.timeliness_seconds,
                self.settings,
            )
            print(f"  {shape}: {result['sent_at_late']}", flush=True)
            self.out["timeliness"].append(result | {"capacity": capacity})

    async def head_of_line(self) -> None:
        result = await head_of_line.run(
            self.servers, self.work, self.sink, self.profile.head_of_line_bulk, self.settings
        )
        print(f"  small campaign late (ms): {result['late_ms']}", flush=True)
        self.out["head_of_line"] = result

    async def upload(self) -> None:
        self.out["upload"] = await upload.run(
            self.servers, self.work, list(self.profile.upload_sizes)
        )

    async def scale(self) -> None:
        self.out["scale"] = await scale.run(
            self.servers, self.work, self.sink, list(self.profile.backlogs), self.settings
        )


async def run_all(
    profile: Profile, settings: dict[str, str], stamp: str, only: tuple[str, ...] = SCENARIOS
) -> dict[str, Any]:
    """Run the scenarios ``only`` of ``profile``; return the results as one JSON-able dict."""
    servers = Servers.from_env()
    out: dict[str, Any] = {
        "profile": profile.name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine.machine(),
        "versions": machine.versions(await servers.mariadb_version()),
        "settings": settings,
        "errors": {},
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mailsched-bench-") as tmp:
        run = _Run(profile, settings, stamp, Path(tmp))
        steps: dict[str, Callable[[], Awaitable[None]]] = {
            "ingest": run.ingest,
            "throughput": run.throughput,
            "timeliness": run.timeliness,
            "scale": run.scale,
            "upload": run.upload,
            "head_of_line": run.head_of_line,
        }
        try:
            for number, name in enumerate(SCENARIOS, 1):
                if name not in only:
                    continue
                print(f"bench: {number}. {name}", flush=True)
                try:
                    await steps[name]()
                except Exception as exc:
                    out["errors"][name] = scrub(f"{exc!r}\n{traceback.format_exc()[-1500:]}")
                    print(f"bench: {name} failed: {exc!r}", flush=True)
        finally:
            run.sink.stop()
    out |= run.out
    out["duration_s"] = round(time.perf_counter() - started)
    return out
