"""The machine and the versions a run measured, for the record."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import psutil

from bench.paths import REPO

_PACKAGES = (
    "mailsched",
    "SQLAlchemy",
    "confluent-kafka",
    "asyncmy",
    "aiosqlite",
    "fastapi",
    "uvicorn",
    "pydantic",
    "email-validator",
)


def machine() -> dict[str, object]:
    """CPU count and model, memory, kernel."""
    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        # Anything above ~0.5 at the start means other work shares the CPUs: compare with care.
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }


def git_rev() -> str:
    """The checkout's commit, with ``+dirty`` when src/ has uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    rev = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return rev + ("+dirty" if git("status", "--porcelain", "--", "src") else "")


def kafka_version() -> str:
    """The running broker's version, from the kafka jar it has open; else the one scripts/services
    installs."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        if "kafka.Kafka" not in " ".join(proc.info["cmdline"] or []):
            continue
        try:
            for f in proc.open_files():
                name = Path(f.path).name
                if name.startswith("kafka_2.13-") and name.endswith(".jar"):
                    return name.removeprefix("kafka_2.13-").removesuffix(".jar")
        except psutil.Error:
            break
    for line in (REPO / "scripts" / "services").read_text().splitlines():
        if line.startswith("KAFKA_VERSION="):
            return line.split("=", 1)[1] + " (scripts/services)"
    return "unknown"


def versions(mariadb: str) -> dict[str, str]:
    """Python, mailsched's git revision, the servers and the libraries that matter."""
    import confluent_kafka

    found = {"python": platform.python_version(), "mailsched_git": git_rev()}
    found["mariadb"] = mariadb
    found["kafka"] = kafka_version()
    found["librdkafka"] = confluent_kafka.libversion()[0]
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
