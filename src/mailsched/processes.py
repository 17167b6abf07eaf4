"""``mailsched worker --processes N``: N worker processes under one parent, one per core.

A worker's Python is single-threaded where it counts; a host with more cores than
workers runs more of them. The parent starts each child as ``mailsched worker``
with the same settings, and only supervises:

- SIGTERM or SIGINT to the parent is passed on to every child, which finish their
  sends and record them (the usual graceful stop); the parent exits once all have.
- A child that exits by itself (a crash, an OOM kill) brings the others down too,
  gracefully, and the parent exits with status 1: the service manager restarts
  the whole, as it would a single worker. Nothing is lost: the dead child's
  claimed deliveries come back when their leases run out.

Each child serves its metrics on ``MAILSCHED_METRICS_PORT`` + its number (from 0),
or on a free port of its own when that is 0.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from types import FrameType

log = logging.getLogger(__name__)


def child_environ(environ: Mapping[str, str], metrics_port: int, number: int) -> dict[str, str]:
    """Child ``number``'s environment: the parent's, with its own metrics port."""
    port = 0 if metrics_port == 0 else metrics_port + number
    return {**environ, "MAILSCHED_METRICS_PORT": str(port)}


def supervise(count: int, metrics_port: int, grace: float) -> int:
    """Run ``count`` ``mailsched worker`` children until a signal or a child's exit;
    return the parent's exit status. Children still running ``grace`` seconds after
    they were asked to stop are killed."""
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            log.info("signal %d: stopping %d worker processes", signum, len(children))
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    command = [sys.executable, "-m", "mailsched", "worker"]
    children: list[subprocess.Popen[bytes]] = []
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for number in range(count):
            env = child_environ(os.environ, metrics_port, number)
            children.append(subprocess.Popen(command, env=env))
        log.info("worker processes started: %s", ", ".join(str(child.pid) for child in children))
        failed = _wait_any(children, lambda: stopping)
        crashed = failed is not None and not stopping
        if failed is not None and crashed:
            log.error(
                "worker process %d exited with status %s: stopping the others",
                failed.pid,
                failed.returncode,
            )
            stop(signal.SIGTERM, None)
        _wait_all(children, grace)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 1 if crashed or any(child.returncode != 0 for child in children) else 0


def _wait_any(
    children: list[subprocess.Popen[bytes]], stopping: Callable[[], bool]
) -> subprocess.Popen[bytes] | None:
    """The first child to exit, or ``None`` once ``stopping()`` and none has."""
    while True:
        for child in children:
            if child.poll() is not None:
                return child
        if stopping():
            return None
        time.sleep(0.1)


def _wait_all(children: list[subprocess.Popen[bytes]], grace: float) -> None:
    """Wait for every child; kill those still running after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker process %d did not stop in %.0f s: killed", child.pid, grace)
            child.kill()
            child.wait()
