"""Real mailsched processes, started and stopped by the bench, and what they cost."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench.paths import scrub


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environ() -> dict[str, str]:
    """This process's environment without any MAILSCHED_* setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILSCHED_")}


@dataclass
class Mailsched:
    """One ``mailsched <command>`` process, its output in ``log``."""

    command: str
    settings: Mapping[str, str]
    log: Path
    popen: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        env = {**clean_environ(), **self.settings}
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "mailsched", *self.command.split()],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.proc = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def shell(self) -> str:
        """The command line as one would type it (paths of this machine replaced)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.settings.items()))
        return scrub(f"{env} mailsched {self.command}")

    def rss_mib(self) -> float:
        return float(self.proc.memory_info().rss) / 2**20

    def cpu_seconds(self) -> float:
        """Its CPU time and its children's (``worker --processes N`` runs N of them)."""
        total = 0.0
        for proc in (self.proc, *self.proc.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def wait_healthy(self, port: int, timeout: float = 60.0) -> None:
        """Until ``GET /healthz`` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"mailsched {self.command} did not answer /healthz in {timeout:.0f} s")

    def wait_log(self, needle: str, timeout: float = 60.0, times: int = 1) -> None:
        """Until ``needle`` appears ``times`` times in the process's output (a worker:
        ``assigned``, once per process of ``worker --processes N``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self.log.read_text(errors="replace").count(needle) >= times:
                return
            time.sleep(0.1)
        raise TimeoutError(f"mailsched {self.command} did not log {needle!r} in {timeout:.0f} s")

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in ``timeout`` seconds."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def _check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mailsched {self.command} exited: {scrub(tail)}")


class PeakRss:
    """Samples the RSS of some processes every ``interval`` seconds; keeps the peak of each."""

    def __init__(self, procs: Mapping[str, Mailsched], interval: float = 0.1) -> None:
        self._procs = procs
        self._interval = interval
        self.peak_mib: dict[str, float] = dict.fromkeys(procs, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        for name, proc in self._procs.items():
            with contextlib.suppress(psutil.Error):
                self.peak_mib[name] = max(self.peak_mib[name], proc.rss_mib())


def service_processes() -> dict[str, psutil.Process]:
    """The shared servers' processes (to read their CPU time, never to touch them)."""
    found: dict[str, psutil.Process] = {}
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "mariadbd":
            found["mariadbd"] = proc
        elif "kafka.Kafka" in cmdline:
            found["kafka"] = proc
    return found


def cpu_seconds(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)
