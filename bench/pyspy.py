"""Sampling a running process with py-spy, and reading its collapsed stacks."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.paths import scrub


def py_spy() -> str | None:
    """The py-spy executable beside this Python, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recording:
    """``py-spy record --format raw`` on ``pid`` until :meth:`stop`."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.out = out
        args = ["record", "--pid", str(pid), "--format", "raw", "--rate", str(rate)]
        args += ["--nonblocking", "--output", str(out)]
        self._popen = subprocess.Popen(
            [exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        self._popen.send_signal(signal.SIGINT)
        try:
            self._popen.wait(30)
        except subprocess.TimeoutExpired:
            self._popen.kill()


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """Share of samples per function: own (leaf) and inclusive, from py-spy's raw output.

    Frames read ``function (file:line)``; the line is dropped so a function counts once.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if not raw.exists():
        return {"samples": 0, "own": [], "inclusive": []}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    raw.write_text(scrub(raw.read_text(errors="replace")))

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": f, "pct": round(100 * n / total, 1)} for f, n in counter.most_common(top)
        ]

    mine = Counter({f: n for f, n in inclusive.items() if "mailsched/" in f})
    return {"samples": total, "own": share(own), "mailsched_inclusive": share(mine)}


def _function(frame: str) -> str:
    name, _, where = frame.partition(" (")
    path = scrub(where.rstrip(")").rsplit(":", 1)[0])
    return f"{name} ({path})"
