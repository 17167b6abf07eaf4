"""Real mailsched processes for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx


class Mailsched:
    """``python -m mailsched ARGS`` with the given environment, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, name: str) -> None:
        self.args = args
        # Only the settings given here: not whatever MAILSCHED_* the shell exported.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MAILSCHED_")}
        # Several workers on one host: each serves its metrics on a free port.
        self.env = {**inherited, "MAILSCHED_METRICS_PORT": "0", **env}
        self.cwd = cwd
        self.log_path = cwd / f"{name}.log"
        self.port = int(env.get("MAILSCHED_PORT", "8080"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mailsched:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailsched", *self.args],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until the API answers /healthz (the process has migrated and is serving)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.args} not ready in {timeout} s:\n{self.output()}")

    def wait_log(self, text: str, timeout: float = 30) -> None:
        """Wait until the process's log contains ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if text in self.output():
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not logged in {timeout} s:\n{self.output()}")

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.args} exited {self.proc.returncode}:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def development_key(self, timeout: float = 30) -> str:
        """The key ``mailsched run`` prints on its first start."""
        self.wait_log("Development API key", timeout)
        lines = self.output().splitlines()
        marker = next(i for i, line in enumerate(lines) if "Development API key" in line)
        return lines[marker + 1].strip()

    def metrics_url(self, timeout: float = 30) -> str:
        """Where a worker serves /metrics (it logs the port it got)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            match = re.search(r"metrics on (http://\S+/metrics)", self.output())
            if match:
                return match.group(1)
            time.sleep(0.1)
        raise AssertionError(f"no metrics address logged:\n{self.output()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM, and wait for a graceful exit; SIGKILL if it does not come."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> Mailsched:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def create_key(env: dict[str, str], cwd: Path, user_id: int = 1) -> str:
    """``mailsched keys create --user-id N`` against ``env``'s database; the key it prints."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MAILSCHED_")}
    result = subprocess.run(
        [sys.executable, "-m", "mailsched", "keys", "create", "--user-id", str(user_id)],
        cwd=cwd,
        env={**inherited, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip().splitlines()[-1]


def auth(key: str) -> dict[str, str]:
    """The header that authenticates with ``key``."""
    return {"Authorization": f"Bearer {key}"}
