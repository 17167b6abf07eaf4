"""What refusing too many recipients costs the API: time to the 413, and memory.

Runs ``mailsched run`` (embedded) and posts one campaign of 1.5 million recipients
(about 26 MB, under the 32 MB request limit, 15 times the recipient limit)::

    python -m bench.refused_recipients [--recipients N]

It prints the status, the seconds from the request to its answer, and how much the
server's resident memory grew, now and at its peak (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def body(recipients: int) -> bytes:
    """A valid campaign but for its number of recipients."""
    return json.dumps(
        {
            "userId": 1,
            "subject": "Refused",
            "body": "Never sent.",
            "startTime": "2026-01-25T12:00:00Z",
            "delaySeconds": 0,
            "hourlyLimit": 1000,
            "recipients": [f"u{i}@ex.io" for i in range(recipients)],
        },
        separators=(",", ":"),
    ).encode()


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (resident at the peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(recipients: int, workdir: Path) -> dict[str, object]:
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MAILSCHED_")}
    env = inherited | {
        "MAILSCHED_DATABASE_URL": f"sqlite:///{workdir / 'mailsched.db'}",
        "MAILSCHED_PORT": str(port),
        "MAILSCHED_METRICS_PORT": "0",
        "MAILSCHED_OUTBOX_DIR": str(workdir / "outbox"),
    }
    log = (workdir / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailsched", "run"], env=env, cwd=workdir, stdout=log, stderr=log
    )
    try:
        base = f"http://127.0.0.1:{port}"
        key = _development_key(workdir / "run.log", base)
        payload = body(recipients)
        with httpx.Client(base_url=base, timeout=120) as client:
            # One small campaign first, so the measure starts from a warm server.
            warm = client.post(
                "/api/v1/email/campaign",
                content=body(2),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            assert warm.status_code == 201, warm.text
            rss_before = memory_kib(proc.pid, "VmRSS")
            peak_before = memory_kib(proc.pid, "VmHWM")
            started = time.perf_counter()
            response = client.post(
                "/api/v1/email/campaign",
                content=payload,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            elapsed = time.perf_counter() - started
        return {
            "recipients": recipients,
            "body_mb": round(len(payload) / 1e6, 1),
            "status": response.status_code,
            "detail": response.json()["detail"],
            "seconds_to_answer": round(elapsed, 3),
            "rss_growth_mb": round((memory_kib(proc.pid, "VmRSS") - rss_before) / 1024, 1),
            "peak_growth_mb": round((memory_kib(proc.pid, "VmHWM") - peak_before) / 1024, 1),
        }
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _development_key(log: Path, base: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log.read_text(errors="replace").splitlines()
        marks = [i for i, line in enumerate(lines) if "Development API key" in line]
        if marks and len(lines) > marks[0] + 1:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return lines[marks[0] + 1].strip()
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"mailsched run not ready:\n{log.read_text(errors='replace')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_500_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        print(json.dumps(measure(args.recipients, Path(workdir)), indent=2))


if __name__ == "__main__":
    main()
