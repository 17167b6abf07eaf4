"""The bounce mailbox's throughput: ``python -m bench.inbound``.

A real ``mailsched inbound`` process over a fresh database (MariaDB, then SQLite)
that holds one campaign of ``--messages`` SENT deliveries, each to its own address.
``--connections`` client threads each open one SMTP connection and send their share
of the DSNs, one per delivery, each to its delivery's VERP return path, one after
another (``MAIL FROM:<>``, ``RCPT``, ``DATA``), as a sending MTA does. Each 250
comes after the message was read (in a thread) and applied in one transaction:
the delivery BOUNCED, the address suppressed, the events written, the circuit
breaker asked. It prints the messages per second from the first connection to the
last 250, and checks that every delivery BOUNCED::

    eval "$(scripts/services env)"
    .venv/bin/python -m bench.inbound [--messages 2000] [--connections 8] [--stack sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bench import machine
from bench.databases import fresh_database
from mailsched.mail.verp import ReturnPath
from mailsched.store.db import Database
from mailsched.store.migrate import upgrade
from mailsched.store.tables import campaigns, deliveries

BOUNCES = "bounces@bounce.example.com"
SECRET = "bench-inbound-secret-key-0123456789"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def dsn(recipient: str, delivery_id: int) -> bytes:
    """A Postfix-like DSN: a hard bounce of ``recipient``."""
    return (
        "From: MAILER-DAEMON@mx.example.net\r\n"
        "To: bounces@bounce.example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown in local recipient table\r\n"
        "--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: news@example.com\r\nTo: {recipient}\r\nSubject: News\r\n"
        f"Message-ID: <c1.d{delivery_id}@example.com>\r\n"
        "--b1--\r\n"
    ).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def seed(url: str, count: int) -> list[tuple[int, str]]:
    """Migrate; one running campaign of ``count`` SENT deliveries: (id, recipient)."""
    db = Database.from_url(url)
    try:
        await upgrade(db)

        async def work(conn: AsyncConnection) -> list[tuple[int, str]]:
            created = await conn.execute(
                insert(campaigns).values(
                    user_id=1,
                    subject="s",
                    body="b",
                    start_time=NOW,
                    delay_seconds=0,
                    hourly_limit=count,
                    status="RUNNING",
                    recipient_count=count,
                    slot_seq=0,
                    created_at=NOW,
                    templated=False,
                )
            )
            campaign_id = int(created.inserted_primary_key[0])  # type: ignore[index]
            rows = [
                {
                    "campaign_id": campaign_id,
                    "recipient": f"user{i}@example.com",
                    "scheduled_at": NOW + timedelta(seconds=i),
                    "status": "SENT",
                    "attempts": 1,
                }
                for i in range(count)
            ]
            await conn.execute(insert(deliveries), rows)
            found = await conn.execute(
                select(deliveries.c.id, deliveries.c.recipient).order_by(deliveries.c.id)
            )
            return [(r.id, r.recipient) for r in found]

        return await db.run(work)
    finally:
        await db.dispose()


async def bounced(url: str) -> int:
    db = Database.from_url(url)
    try:

        async def work(conn: AsyncConnection) -> int:
            query = select(func.count()).where(deliveries.c.status == "BOUNCED")
            return int((await conn.execute(query)).scalar_one())

        return await db.run(work)
    finally:
        await db.dispose()


def start_inbound(url: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """``mailsched inbound``, waited for until it listens."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MAILSCHED_")}
    env = inherited | {
        "MAILSCHED_DATABASE_URL": url,
        "MAILSCHED_SECRET_KEY": SECRET,
        "MAILSCHED_BOUNCE_ADDRESS": BOUNCES,
        "MAILSCHED_INBOUND_PORT": str(port),
        "MAILSCHED_METRICS_PORT": "0",
        "MAILSCHED_LOG_LEVEL": "WARNING",
    }
    log = workdir / f"inbound-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailsched", "inbound"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"mailsched inbound exited:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"220"):
                    return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("mailsched inbound did not listen within 60 s")


def send_share(port: int, messages: list[tuple[str, bytes]]) -> int:
    """One connection's DSNs, one after another; how many were answered 250."""
    taken = 0
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("mx.example.net")
        for rcpt, raw in messages:
            client.mail("")
            client.rcpt(rcpt)
            code, _ = client.data(raw)
            taken += code == 250
    return taken


def run(
    stack: str, count: int, connections: int, workdir: Path, return_path: ReturnPath
) -> dict[str, Any]:
    async def body() -> dict[str, Any]:
        async with fresh_database(stack, workdir) as url:
            targets = await seed(url, count)
            messages = [(return_path.address(i), dsn(r, i)) for i, r in targets]
            shares = [messages[k::connections] for k in range(connections)]
            port = free_port()
            process = await asyncio.to_thread(start_inbound, url, port, workdir)
            try:
                started = time.perf_counter()
                with ThreadPoolExecutor(connections) as pool:
                    taken = await asyncio.gather(
                        *(
                            asyncio.wrap_future(pool.submit(send_share, port, share))
                            for share in shares
                        )
                    )
                seconds = time.perf_counter() - started
            finally:
                process.terminate()
                await asyncio.to_thread(process.wait, 30)
            return {
                "stack": stack,
                "messages": count,
                "connections": connections,
                "answered_250": sum(taken),
                "bounced": await bounced(url),
                "seconds": round(seconds, 2),
                "per_second": round(count / seconds, 1),
            }

    return asyncio.run(body())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inbound", description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--stack", action="append", choices=("mariadb", "sqlite"))
    args = parser.parse_args(argv)
    print(f"mailsched {machine.git_rev()}; {machine.machine()}")
    key = hmac.new(SECRET.encode(), b"mailsched verp", hashlib.sha256).digest()
    return_path = ReturnPath(BOUNCES, key)
    with tempfile.TemporaryDirectory() as workdir:
        for stack in args.stack or ("mariadb", "sqlite"):
            r = run(stack, args.messages, args.connections, Path(workdir), return_path)
            print(
                f"{r['stack']}: {r['messages']} DSNs over {r['connections']} connections in "
                f"{r['seconds']} s: {r['per_second']} messages/s "
                f"({r['answered_250']} answered 250, {r['bounced']} deliveries BOUNCED)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
