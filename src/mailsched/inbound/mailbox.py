"""The bounce mailbox: what ``mailsched inbound`` does with each SMTP transaction.

RCPT: only the bounce domain's addresses are taken (``550`` otherwise: no open relay),
at most :data:`MAX_RECIPIENTS` of them per message (``452``, the client sends the rest
in another transaction).

DATA: a message received within the limits is always answered ``250``, whatever it
holds, so that no sender's MTA retries or bounces the bounce; only an unreachable
database answers ``451``, to be sent again later. For each recipient:

- a return path whose token verifies names one delivery. The message is read once,
  in a thread (:func:`~mailsched.inbound.reports.read_reports`), and the delivery gets
  its most severe report: a complaint, else a hard bounce, else a soft one (the first
  of its kind). The return path identifies the delivery, so a report naming another
  recipient (an alias, a forwarding address) still applies to it; a report with
  several failed recipients is about one letter of ours, so one report decides.
- a token that does not verify (``forged``) changes nothing, whatever Message-ID or
  recipient the message names: it is not even read.
- an address of the bounce domain without a token (``no_token``: postmaster, the
  plain bounce address a feedback loop is registered with) is read for the original
  message's quoted ``Return-Path``: a report whose quoted return path verifies
  applies to its delivery, as if it had come to that address. Otherwise it changes
  nothing.
- Whatever changed nothing (forged, no_token, unrecognised, unknown_delivery,
  unreadable) is kept for inspection, once per message and outcome, and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailsched.config import InboundConfig
from mailsched.errors import ForgedReturnPath, ReportTooLarge, StoreError, StoreUnavailable
from mailsched.inbound.feedback import Feedback, Received
from mailsched.inbound.reports import Kind, Report, read_reports
from mailsched.mail.message import ascii_domain
from mailsched.mail.verp import ReturnPath
from mailsched.metrics import Metrics

log = logging.getLogger(__name__)

#: Recipients of one message; a bounce has one.
MAX_RECIPIENTS = 100
#: The ``source`` of what the bounce mailbox applies and keeps.
SOURCE = "smtp"

_SEVERITY = {Kind.COMPLAINT: 0, Kind.HARD: 1, Kind.SOFT: 2}


def most_severe(reports: Sequence[Report]) -> Report | None:
    """The report that decides for one delivery: a complaint, else a hard bounce,
    else a soft one; the first of its kind. ``None`` for no report."""
    return min(reports, key=lambda r: _SEVERITY[r.kind], default=None)


class Mailbox:
    """The aiosmtpd handler of the bounce mailbox (its ``handle_*`` hooks)."""

    def __init__(
        self,
        config: InboundConfig,
        return_path: ReturnPath,
        feedback: Feedback,
        metrics: Metrics,
    ) -> None:
        self._return_path = return_path
        self._feedback = feedback
        self._metrics = metrics
        self._domains = frozenset({config.domain, ascii_domain(config.domain).lower()})
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Until no message is being processed (for a graceful stop)."""
        await self._idle.wait()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if domain not in self._domains:
            self._metrics.inbound_messages.labels("refused_relay").inc()
            log.info("refused a recipient of another domain from %s", _peer(session))
            return "550 5.7.1 Relaying denied"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._busy += 1
        self._idle.clear()
        started = time.perf_counter()
        try:
            outcomes = await self._receive(envelope, _peer(session))
        except StoreUnavailable as exc:
            log.warning("database unavailable, asking the sender to retry: %s", exc)
            return "451 4.3.0 Temporary failure, try again later"
        except StoreError:
            # Refused for good: asking the sender to retry would not help.
            log.exception("a message from %s could not be stored", _peer(session))
            outcomes = ["error"]
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()
        for outcome in outcomes:
            self._metrics.inbound_messages.labels(outcome).inc()
        self._metrics.inbound_seconds.observe(time.perf_counter() - started)
        return "250 2.0.0 OK"

    async def _receive(self, envelope: Envelope, peer: str) -> list[str]:
        """Each recipient's outcome; applies and keeps what the message says."""
        raw = envelope.original_content or b""
        mail_from = envelope.mail_from
        deliveries: dict[int, str] = {}
        unverified: dict[str, str] = {}  # outcome -> the first such recipient
        outcomes: list[str] = []
        for rcpt in envelope.rcpt_tos:
            try:
                deliveries.setdefault(self._return_path.delivery_of(rcpt), rcpt)
            except ForgedReturnPath:
                outcome = "forged" if "+" in rcpt.rpartition("@")[0] else "no_token"
                unverified.setdefault(outcome, rcpt)
                outcomes.append(outcome)
                log.warning("%s message from %s changes nothing", outcome, peer)
        if deliveries:
            outcomes += await self._apply(raw, mail_from, deliveries)
        elif "no_token" in unverified:
            # A feedback loop mails a fixed address: the report may quote the
            # original's return path, whose token names the delivery.
            quoted = await self._quoted(raw, mail_from)
            if quoted:
                del unverified["no_token"]
                outcomes = [o for o in outcomes if o != "no_token"] + quoted
        for outcome, rcpt in unverified.items():
            await self._feedback.keep(SOURCE, outcome, raw, mail_from, rcpt)
        return outcomes

    async def _quoted(self, raw: bytes, mail_from: str | None) -> list[str]:
        """Apply the reports whose quoted return path verifies; their outcomes."""
        try:
            reports = await asyncio.to_thread(read_reports, raw)
        except ReportTooLarge:
            return []
        named: dict[int, list[Report]] = {}
        for report in reports:
            if report.return_path is None:
                continue
            try:
                delivery_id = self._return_path.delivery_of(report.return_path)
            except ForgedReturnPath:
                continue
            named.setdefault(delivery_id, []).append(report)
        received = [
            Received(delivery_id, chosen)
            for delivery_id, found in named.items()
            if (chosen := most_severe(found)) is not None
        ]
        if not received:
            return []
        return [o.value for o in await self._feedback.apply(received, SOURCE)]

    async def _apply(
        self, raw: bytes, mail_from: str | None, deliveries: dict[int, str]
    ) -> list[str]:
        first = next(iter(deliveries.values()))
        try:
            report = most_severe(await asyncio.to_thread(read_reports, raw))
        except ReportTooLarge:
            await self._feedback.keep(SOURCE, "unreadable", raw, mail_from, first)
            return ["unreadable"] * len(deliveries)
        if report is None:
            await self._feedback.keep(SOURCE, "unrecognised", raw, mail_from, first)
            return ["unrecognised"] * len(deliveries)
        received = [Received(delivery_id, report) for delivery_id in deliveries]
        outcomes = [o.value for o in await self._feedback.apply(received, SOURCE)]
        if "unknown_delivery" in outcomes:
            rcpt = deliveries[received[outcomes.index("unknown_delivery")].delivery_id]
            await self._feedback.keep(SOURCE, "unknown_delivery", raw, mail_from, rcpt)
        return outcomes


def _peer(session: Session) -> str:
    """The client's IP address, for logs."""
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)
