"""What shaping costs one worker: ``python -m bench.shaping [--rounds N] [--quick|--full]``.

The throughput scenario (``python -m bench --only throughput``: 10 campaigns,
deliveries due at once, ``mailsched api`` + one ``mailsched worker`` on MariaDB +
Kafka into smtp-sink) in three variants, alternated in one invocation so that the
ratios compare like with like:

- ``off``: no shaping file;
- ``destination``: every recipient's domain (example.com) in one group whose
  limits never bind: each claim locks the group's row, reads its numbered sends'
  end times and numbers its own (one ``shaping_slots`` row per send);
- ``warmup``: the same group with a warm-up cap that never binds, so the claim
  reads two limits' references.

Results: ``bench/results/<timestamp>-shaping.json``::

    eval "$(scripts/services env)"
    .venv/bin/python -m bench.shaping --rounds 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import machine
from bench.paths import RESULTS, scrub
from bench.variants import alternate

GROUP = """
[[group]]
name = "bench"
domains = ["example.com"]
max_per_second = 1000000
max_per_hour = 1000000000
"""
WARMUP = GROUP + "warmup = { start = 1000000000, factor = 1.0, since = 2026-01-01 }\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shaping", description=__doc__)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each variant")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_const", dest="size", const="--quick")
    sizes.add_argument("--full", action="store_const", dest="size", const="--full")
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.shaping", *(argv or sys.argv[1:])]),
        "machine": machine.machine(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="mailsched-bench-shaping-") as work:
        variants: dict[str, dict[str, str]] = {"off": {}}
        for name, text in (("destination", GROUP), ("warmup", WARMUP)):
            path = Path(work) / f"{name}.toml"
            path.write_text(text)
            variants[name] = {"MAILSCHED_SHAPING_FILE": str(path)}
        runs, out["one_worker"] = alternate(variants, args.rounds, args.size, "shaping")
        out["runs"] = runs
    print(f"one worker, emails/s: {out['one_worker']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stamp}-shaping.json"
    path.write_text(scrub(json.dumps(out, indent=2)) + "\n")
    print(f"bench.shaping: results in bench/results/{path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
