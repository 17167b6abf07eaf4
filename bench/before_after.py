"""The worker's emails/s on two commits, runs alternated: ``python -m bench.before_after``.

Each commit is checked out as a git worktree in the temporary directory (removed
at the end: what others change in this checkout meanwhile does not leak in), and
the throughput scenario is run from each tree in turn, A B A B …, each as its
own ``python -m bench --only throughput --no-doc``
with ``PYTHONPATH=<tree>/src``, so that the bench and every ``mailsched`` process
it spawns import that tree's code (checked from a spawned process, and by whether
``mailsched.store.transitions``, which the events issue added, exists there)::

    eval "$(scripts/services env)"
    .venv/bin/python -m bench.before_after --before 1d58fb0 --rounds 2 --full --quiet-wait 1500

Every run's 1- and 2-worker figures are printed and written to
``bench/results/<timestamp>-before-after.json``, with the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import machine
from bench.paths import REPO, RESULTS, scrub
from bench.quiet import wait_quiet
from bench.variants import label

_RESULTS_LINE = re.compile(r"bench: results in (bench/results/\S+\.json)")
_PROBE = (
    "import importlib.util, mailsched; print(mailsched.__file__); "
    "print(importlib.util.find_spec('mailsched.store.transitions') is not None)"
)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree / "src")}


def probe(tree: Path) -> dict[str, Any]:
    """Which mailsched a process spawned for ``tree`` imports."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tree,
        env=_env(tree),
        capture_output=True,
        text=True,
        check=True,
    )
    where, has_transitions = done.stdout.split()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"{tree} imports mailsched from {where}")
    return {"mailsched_file": scrub(where), "has_transitions": has_transitions == "True"}


def throughput(tree: Path, size: str) -> dict[str, Any]:
    """One ``python -m bench --only throughput`` from ``tree``; its figures."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench", size, "--only", "throughput", "--no-doc"],
        cwd=tree,
        env=_env(tree),
        capture_output=True,
        text=True,
        check=False,
    )
    found = _RESULTS_LINE.search(done.stdout)
    if done.returncode != 0 or found is None:
        tail = scrub((done.stdout + done.stderr)[-3000:])
        raise RuntimeError(f"bench failed in {scrub(str(tree))}: {tail}")
    result = json.loads((tree / found.group(1)).read_text())
    runs = {label(r): r["emails_per_s"] for r in result["throughput"]}
    return {
        **runs,
        "profiled_1w": result["throughput_profile"]["emails_per_s"],
        "ceiling": result["ceiling"]["emails_per_s"],
        "cpu_1w": result["throughput"][0]["cpu_share_pct"],
        "git": result["versions"]["mailsched_git"],
        "loadavg_1m_at_start": result["machine"]["loadavg_1m_at_start"],
        "seconds": round(time.perf_counter() - started),
    }


def compare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each side per worker count, and after/before."""
    out: dict[str, Any] = {}
    for key in ("1w", "2w", "profiled_1w"):
        before = [r[key] for r in runs if r["tree"] == "before"]
        after = [r[key] for r in runs if r["tree"] == "after"]
        b, a = statistics.median(before), statistics.median(after)
        out[key] = {"before_median": b, "after_median": a, "ratio": round(a / b, 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.before_after", description=__doc__)
    parser.add_argument("--before", default="1d58fb0", help="the commit to compare with")
    parser.add_argument("--after", default="HEAD", help="the commit to compare")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs (A B) to make")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for no pytest in 30 s",
    )
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_const", dest="size", const="--quick")
    sizes.add_argument("--full", action="store_const", dest="size", const="--full")
    args = parser.parse_args(argv)
    size = args.size or "--quick"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = Path(tempfile.mkdtemp(prefix="mailsched-before-after-"))
    trees: dict[str, Path] = {}
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.before_after", *(argv or sys.argv[1:])]),
        "machine": machine.machine(),
        "size": size,
        "runs": [],
    }
    try:
        for name, commit in (("before", args.before), ("after", args.after)):
            trees[name] = work / name
            _git("worktree", "add", "--detach", str(trees[name]), commit)
        out["trees"] = {name: {"rev": _git_rev(t), **probe(t)} for name, t in trees.items()}
        print(f"bench.before_after: {json.dumps(out['trees'])}", flush=True)
        for number in range(args.rounds):
            for name in ("before", "after"):
                quiet = wait_quiet(limit=args.quiet_wait) if args.quiet_wait else None
                run = {"round": number + 1, "tree": name, "quiet": quiet}
                run |= throughput(trees[name], size)
                out["runs"].append(run)
                print(
                    f"  round {number + 1} {name} ({run['git']}): 1 worker {run['1w']}/s, "
                    f"2 workers {run['2w']}/s, profiled {run['profiled_1w']}/s, "
                    f"load {run['loadavg_1m_at_start']}, quiet wait {quiet}",
                    flush=True,
                )
        out["comparison"] = compare(out["runs"])
    finally:
        for tree in trees.values():
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False
            )
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stamp}-before-after.json"
    path.write_text(scrub(json.dumps(out, indent=2)) + "\n")
    for key, c in out["comparison"].items():
        print(
            f"{key}: before {c['before_median']}/s, after {c['after_median']}/s, "
            f"after/before {c['ratio']}"
        )
    print(f"bench.before_after: results in bench/results/{path.name}")
    return 0


def _git_rev(tree: Path) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=tree, capture_output=True, text=True
    )
    return done.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
