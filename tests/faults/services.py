"""Breaking and mending this checkout's MariaDB and Kafka (run by ``scripts/services``).

The services keep their pid files and data under ``.services/`` at the
repository root; these helpers kill them the hard way and let
``scripts/services start`` bring them back (it re-formats a wiped Kafka).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "services"
STATE = REPO / ".services"
KAFKA_PID = STATE / "kafka" / "kafka.pid"
KAFKA_DATA = STATE / "kafka" / "data"
MARIADB_PID = STATE / "mariadb" / "mariadbd.pid"


def start(timeout: float = 180) -> None:
    """``scripts/services start``: bring back whatever is down; wait until ready."""
    result = subprocess.run(
        [str(SCRIPT), "start"], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"scripts/services start failed:\n{result.stderr}")


def running() -> bool:
    """Whether ``scripts/services status`` says MariaDB and Kafka both run."""
    result = subprocess.run(
        [str(SCRIPT), "status"], capture_output=True, text=True, timeout=60, check=False
    )
    return result.returncode == 0


def ensure_running() -> None:
    if not running():
        start()


def _pid(path: Path) -> int:
    return int(path.read_text().strip())


def _signal_and_wait(pid: int, sig: int, timeout: float) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if _zombie(pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} did not exit within {timeout} s of signal {sig}")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return False


def kill_kafka() -> None:
    """kill -9 the Kafka broker."""
    _signal_and_wait(_pid(KAFKA_PID), signal.SIGKILL, 10)


def wipe_kafka() -> None:
    """Stop the broker and delete its data folder (topics, offsets, groups: everything)."""
    _signal_and_wait(_pid(KAFKA_PID), signal.SIGTERM, 60)
    shutil.rmtree(KAFKA_DATA, ignore_errors=True)


def kill_mariadb() -> None:
    """kill -9 MariaDB."""
    _signal_and_wait(_pid(MARIADB_PID), signal.SIGKILL, 10)


# The 3-node Kafka cluster (``scripts/services kafka-cluster``), beside the single broker.

#: The cluster's node ids, which ``scripts/services kafka-node`` takes.
NODES = (1, 2, 3)


def _services(*args: str, timeout: float) -> str:
    result = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"scripts/services {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def start_kafka_cluster(timeout: float = 300) -> str:
    """Start whichever cluster nodes are down, wait until all are ready; the bootstrap list."""
    _services("kafka-cluster", "start", timeout=timeout)
    env = _services("env", timeout=30)
    found = re.search(r"MAILSCHED_TEST_KAFKA_CLUSTER_BOOTSTRAP_SERVERS=(\S+)", env)
    if found is None:
        raise AssertionError(f"scripts/services env names no cluster:\n{env}")
    return found.group(1)


def kafka_node(action: str, node: int) -> None:
    """``kill`` (SIGKILL), ``stop`` (controlled shutdown) or ``start`` (and wait) one node."""
    _services("kafka-node", action, str(node), timeout=180)
