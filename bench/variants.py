"""Variants of the throughput scenario, alternated in one invocation so that their
ratios compare like with like (``bench.dkim``, ``bench.shaping``)."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from typing import Any

from bench.paths import REPO, scrub

_RESULTS_LINE = re.compile(r"bench: results in (bench/results/\S+\.json)")


def label(run: dict[str, Any]) -> str:
    """``1w``, ``2w``, and ``1wx2`` for ``worker --processes 2``: one worker too, and
    otherwise taken for the plain one-worker run."""
    processes = run.get("processes", 1)
    return f"{run['workers']}w" + (f"x{processes}" if processes > 1 else "")


def throughput(size: str, settings: dict[str, str]) -> dict[str, Any]:
    """One ``python -m bench --only throughput`` with ``settings``; its figures."""
    sets = [arg for name, value in settings.items() for arg in ("--set", f"{name}={value}")]
    done = subprocess.run(
        [sys.executable, "-m", "bench", size, "--only", "throughput", "--no-doc", *sets],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    found = _RESULTS_LINE.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"bench failed: {scrub((done.stdout + done.stderr)[-3000:])}")
    result = json.loads((REPO / found.group(1)).read_text())
    runs = {label(r): r["emails_per_s"] for r in result["throughput"]}
    return {
        **runs,
        "cpu_1w": result["throughput"][0]["cpu_share_pct"],
        "loadavg_1m_at_start": result["machine"]["loadavg_1m_at_start"],
        "results": found.group(1),
    }


def alternate(
    variants: dict[str, dict[str, str]], rounds: int, size: str | None, label: str
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Run every variant's settings ``rounds`` times, alternated (a, b, c, a, b, c…);
    each run, and per variant the median one-worker emails/s with its ratio to the
    first variant's."""
    runs: list[dict[str, Any]] = []
    for number in range(rounds):
        for name, settings in variants.items():
            run = {"round": number + 1, label: name} | throughput(size or "--quick", settings)
            runs.append(run)
            print(f"  round {number + 1} {label} {name}: {run}", flush=True)
    medians = {
        name: statistics.median(r["1w"] for r in runs if r[label] == name) for name in variants
    }
    base = next(iter(medians.values()))
    summary = {
        name: {"median": m, "ratio_to_off": round(m / base, 3)} for name, m in medians.items()
    }
    return runs, summary
