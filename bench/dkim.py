"""What DKIM signing costs: ``python -m bench.dkim [--rounds N] [--quick|--full]``.

1. In-process: milliseconds per signature of a rendered letter (text + HTML, 4 KiB,
   unsubscribe headers), RSA-2048 and Ed25519, with the body hash kept per
   campaign (the worker's case) and for a new body each time (a templated
   campaign's); and dkimpy's own ``DKIM.sign`` for comparison (pure-Python RSA).
2. End to end: the throughput scenario (``python -m bench --only throughput``)
   with DKIM off, RSA-2048 and Ed25519, runs alternated in one invocation
   (off, rsa, ed25519, off, …) so that the ratios compare like with like. Each
   run's one-worker emails/s is the SENT count over the span of ``sent_at``.

Results: ``bench/results/<timestamp>-dkim.json``::

    eval "$(scripts/services env)"
    .venv/bin/python -m bench.dkim --rounds 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from bench import machine
from bench.paths import RESULTS, scrub
from bench.variants import alternate
from mailsched.config import DkimKey
from mailsched.mail.dkim import DkimSigner
from mailsched.mail.message import MessageTemplate, Unsubscribe

DATE = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LINKS = Unsubscribe("https://x.example/u/t0k3n", "mailto:u+t0k3n@x.example")
KEYS = {
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


def letters(count: int, *, distinct_bodies: bool) -> list[bytes]:
    shared = MessageTemplate(
        1, "news@example.com", "Sale", "Text line\n" * 150, html_body="<p>x</p>" * 150
    )
    out = []
    for i in range(count):
        template = (
            MessageTemplate(i, "news@example.com", "Sale", f"Text {i}\n" * 150)
            if distinct_bodies
            else shared
        )
        out.append(template.render(f"u{i}@example.org", i + 1, DATE, unsubscribe=LINKS))
    return out


def ms_per_signature(key: DkimKey, messages: list[bytes]) -> float:
    signer = DkimSigner("example.com", "bench", key)
    started = time.perf_counter()
    for message in messages:
        signer.sign(message)
    return round((time.perf_counter() - started) / len(messages) * 1e3, 3)


def dkimpy_ms(key: DkimKey, messages: list[bytes]) -> float:
    """dkimpy's own signing (its RSA is pure Python; it parses the key every call)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        import base64

        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        secret, algorithm = base64.b64encode(raw), b"ed25519-sha256"
    else:
        secret = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        algorithm = b"rsa-sha256"
    headers = [b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe"]
    started = time.perf_counter()
    for message in messages:
        dkim.DKIM(message, signature_algorithm=algorithm).sign(
            b"bench",
            b"example.com",
            secret,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=headers,
        )
    return round((time.perf_counter() - started) / len(messages) * 1e3, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dkim", description=__doc__)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each variant")
    parser.add_argument("--no-e2e", action="store_true", help="only the in-process figures")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_const", dest="size", const="--quick")
    sizes.add_argument("--full", action="store_const", dest="size", const="--full")
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.dkim", *(argv or sys.argv[1:])]),
        "machine": machine.machine(),
        "ms_per_signature": {},
        "runs": [],
    }
    keys = {name: make() for name, make in KEYS.items()}
    shared, distinct = letters(2000, distinct_bodies=False), letters(500, distinct_bodies=True)
    for name, key in keys.items():
        figures = {
            "shared_body": ms_per_signature(key, shared),
            "new_body_each": ms_per_signature(key, distinct),
            "dkimpy_sign": dkimpy_ms(key, shared[:200]),
        }
        out["ms_per_signature"][name] = figures
        print(f"{name}: ms per signature {figures}", flush=True)
    if not args.no_e2e:
        with tempfile.TemporaryDirectory(prefix="mailsched-bench-dkim-") as work:
            variants: dict[str, dict[str, str]] = {"off": {}}
            for name, key in keys.items():
                path = Path(work) / f"{name}.pem"
                path.write_bytes(
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
                variants[name] = {
                    "MAILSCHED_DKIM_DOMAIN": "example.com",
                    "MAILSCHED_DKIM_SELECTOR": "bench",
                    "MAILSCHED_DKIM_KEY_FILE": str(path),
                }
            runs, out["one_worker"] = alternate(variants, args.rounds, args.size, "dkim")
            out["runs"] = runs
        print(f"one worker, emails/s: {out['one_worker']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stamp}-dkim.json"
    path.write_text(scrub(json.dumps(out, indent=2)) + "\n")
    print(f"bench.dkim: results in bench/results/{path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
