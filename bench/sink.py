"""The SMTP side: a private Postfix smtp-sink with its running counter, and smtp-source's rate.

The bench runs its own smtp-sink (as ``scripts/services smtp-sink`` does, ``-c``
for the counter) on a free port, so its count is this run's alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass

SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
_COUNT = re.compile(rb"mesg=(\d+)")


class SmtpSink:
    """``smtp-sink -c`` on 127.0.0.1:``port``; :attr:`messages` is its DATA counter."""

    def __init__(self, port: int, backlog: int = 1000) -> None:
        self.port = port
        self.command = f"smtp-sink -c -u nobody 127.0.0.1:{port} {backlog}"
        self._popen = subprocess.Popen(
            [SMTP_SINK, "-c", "-u", "nobody", f"127.0.0.1:{port}", str(backlog)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        self.messages = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def _read(self) -> None:
        stream = self._popen.stdout
        assert stream is not None
        tail = b""
        while chunk := os.read(stream.fileno(), 65536):
            tail = (tail + chunk)[-64:]
            counts = _COUNT.findall(tail)
            if counts:
                self.messages = int(counts[-1])

    def wait_for(self, count: int, timeout: float) -> bool:
        """Until the counter reaches ``count``; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.messages < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages >= count

    def stop(self) -> None:
        self._popen.terminate()
        self._popen.wait(10)


@dataclass(frozen=True, slots=True)
class SourceRate:
    """What ``smtp-source`` managed against the sink: the ceiling."""

    command: str
    messages: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds


def smtp_source_rate(sink: SmtpSink, messages: int, sessions: int, length: int) -> SourceRate:
    """Time ``smtp-source`` sending ``messages`` over ``sessions`` reused connections (``-d``)."""
    args = ["-d", "-s", str(sessions), "-m", str(messages), "-l", str(length)]
    args += ["-f", "bench@example.com", "-t", "sink@example.com", f"127.0.0.1:{sink.port}"]
    for attempt in (1, 2):
        before = sink.messages
        started = time.perf_counter()
        done = subprocess.run([SMTP_SOURCE, *args], capture_output=True, text=True, timeout=600)
        if done.returncode == 0:
            break
        if attempt == 2:
            raise RuntimeError(f"smtp-source failed: {done.stderr.strip()[-500:]}")
    sink.wait_for(before + messages, timeout=30)
    seconds = time.perf_counter() - started
    return SourceRate(f"smtp-source {' '.join(args)}", sink.messages - before, seconds)
