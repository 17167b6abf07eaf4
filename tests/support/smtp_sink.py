"""A real SMTP server on loopback (aiosmtpd in a thread) that records what arrives, and when."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Arrival:
    """One message the sink accepted."""

    at: float  # time.time() when the DATA was accepted
    mail_from: str
    rcpt: str
    message: EmailMessage

    @property
    def campaign_id(self) -> int:
        # Message-ID is <c{campaign}.d{delivery}@domain>.
        return int(str(self.message["Message-ID"]).split(".", 1)[0].lstrip("<c"))


@dataclass(frozen=True)
class Gate:
    """Holds every DATA back until ``opened`` is set; ``waiting`` is set once one is held."""

    waiting: threading.Event = field(default_factory=threading.Event)
    opened: threading.Event = field(default_factory=threading.Event)


#: Decides the reply to RCPT TO: ``None`` accepts, a string such as "451 later" refuses.
RcptPolicy = Callable[[str], str | None]


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self._sink.rcpt_policy(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        gate = self._sink.gate
        if gate is not None and not gate.opened.is_set():
            gate.waiting.set()
            await asyncio.get_running_loop().run_in_executor(None, gate.opened.wait)
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        now = time.time()
        self._sink.record_content(content)
        for rcpt in envelope.rcpt_tos:
            self._sink.record(Arrival(now, str(envelope.mail_from), rcpt, message))
        return "250 OK queued"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ArrivalLog:
    """What a test sink accepted, recorded from its server's thread and read from the
    test's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrivals: list[Arrival] = []

    def record(self, arrival: Arrival) -> None:
        with self._lock:
            self._arrivals.append(arrival)

    @property
    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return list(self._arrivals)

    def per_recipient(self) -> Counter[str]:
        return Counter(a.rcpt.lower() for a in self.arrivals)

    def wait_for(self, count: int, timeout: float) -> list[Arrival]:
        """Wait until at least ``count`` messages arrived (or ``timeout``); return them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.arrivals) >= count:
                break
            time.sleep(0.05)
        return self.arrivals


class SmtpSink(ArrivalLog):
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is for MAILSCHED_SMTP_URL."""

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self._contents: list[bytes] = []
        self.rcpt_policy: RcptPolicy = lambda _address: None
        #: When set, messages wait at it before they are accepted.
        self.gate: Gate | None = None
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, decode_data=False
        )

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def record_content(self, content: bytes) -> None:
        with self._lock:
            self._contents.append(content)

    @property
    def contents(self) -> list[bytes]:
        """Each message's bytes exactly as received (one per DATA, not per recipient)."""
        with self._lock:
            return list(self._contents)
