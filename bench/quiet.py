"""Waiting for a quiet machine: no test run (``pgrep -f pytest``) for a while.

The servers and CPUs are shared with whoever runs the test suite; a figure taken
beside it measures both. What the wait found is recorded with each figure.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any


def busy() -> bool:
    """Whether some pytest runs on this machine."""
    done = subprocess.run(["pgrep", "-f", "pytest"], capture_output=True, check=False)
    return done.returncode == 0


def wait_quiet(quiet_for: float = 30.0, limit: float = 1500.0, poll: float = 2.0) -> dict[str, Any]:
    """Until no pytest has run for ``quiet_for`` seconds, at most ``limit`` seconds.

    Returns what was found: ``quiet`` (false: measured anyway after ``limit``),
    the seconds waited, and the load average when the wait ended.
    """
    started = time.monotonic()
    calm_since = started
    while True:
        now = time.monotonic()
        if busy():
            calm_since = now
        elif now - calm_since >= quiet_for:
            quiet = True
            break
        if now - started >= limit:
            quiet = False
            break
        time.sleep(poll)
    return {
        "quiet": quiet,
        "waited_s": round(time.monotonic() - started),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
