"""``python -m bench [--quick|--full] [--set NAME=VALUE]``; use ``scripts/bench``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

from bench import report
from bench.paths import DOC, RESULTS, scrub
from bench.profiles import FULL, QUICK, SETTINGS
from bench.runner import SCENARIOS, run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="profile", const=QUICK)
    size.add_argument("--full", action="store_const", dest="profile", const=FULL)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MAILSCHED_NAME=VALUE",
        help="a setting for every mailsched process (repeatable)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeatable); the doc is then left alone",
    )
    parser.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    profile = args.profile or QUICK
    settings = dict(SETTINGS)
    for item in args.set:
        name, _, value = item.partition("=")
        if not name.startswith("MAILSCHED_") or not value:
            parser.error(f"--set wants MAILSCHED_NAME=VALUE, not {item!r}")
        settings[name] = value

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    only = tuple(args.only or SCENARIOS)
    results = asyncio.run(run_all(profile, settings, stamp, only))
    argv_text = " ".join(["scripts/bench", *(argv if argv is not None else sys.argv[1:])])
    results["command"] = argv_text
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stamp}.json"
    path.write_text(scrub(json.dumps(results, indent=2, default=str)) + "\n")
    table = report.markdown(results)
    print(table)
    print(f"bench: results in bench/results/{path.name}")
    if results["errors"]:
        print(f"bench: failed: {', '.join(results['errors'])} (see the JSON)", file=sys.stderr)
    if not args.no_doc and not args.only:
        report.update_doc(DOC, table)
        print("bench: docs/benchmarks.md updated")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
