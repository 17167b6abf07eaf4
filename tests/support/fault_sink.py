"""An SMTP sink that misbehaves on demand, for the fault-injection suite.

It is :class:`~tests.support.smtp_sink.SmtpSink` with another handler: every
behaviour can be switched while mailsched is sending to it.

- hold: accept the next DATA, record it as arrived, and sit on the ``250``
  for a while (the window SMTP leaves open: the server has the message, the
  client does not know yet);
- ``tempfail_rate``: answer DATA with ``451`` this often (nothing arrives);
- ``permfail``: recipients whose RCPT is answered ``550``;
- ``reply_delay``: answer every MAIL, RCPT and DATA this late;
- ``drop_rate``: close the connection at DATA before keeping the message;
- ``drop_after_data_rate``: keep the message, then close the connection
  without answering (the client cannot know it arrived).

Each arrival says which process sent it: the sink finds the peer's socket
among the open files of the pids in ``watch_pids`` (loopback only, Linux).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import random
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.smtp_sink import Arrival, SmtpSink


@dataclass(frozen=True)
class FaultArrival(Arrival):
    """An arrival with the sending process, when the sink could tell."""

    pid: int | None
    held: bool


def socket_owner(peer_port: int, server_port: int, pids: set[int]) -> int | None:
    """Which of ``pids`` holds the loopback socket ``peer_port -> server_port``."""
    inode = _socket_inode(peer_port, server_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    try:
        with open("/proc/net/tcp") as table:
            lines = table.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == (
            remote_port
        ):
            return inode
    return None


class _FaultHandler:
    def __init__(self, sink: FaultSink) -> None:
        self._sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        await self._sink.pause()
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        await self._sink.pause()
        if address.lower() in self._sink.permfail:
            return "550 5.1.1 no such user here"
        reply = self._sink.rcpt_policy(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        sink = self._sink
        await sink.pause()
        roll = sink.roll()
        if roll < sink.drop_rate:
            _drop(server)
            return "421 4.4.2 dropped"
        if roll < sink.drop_rate + sink.tempfail_rate:
            return "451 4.3.0 try again later"
        pid = sink.owner_of(session)
        held = sink.take_hold()
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        now = time.time()
        for rcpt in envelope.rcpt_tos:
            sink.record(FaultArrival(now, str(envelope.mail_from), rcpt, message, pid, held > 0))
        if held:
            sink.holding.set()
            await sink.wait_released(held)
        if sink.roll() < sink.drop_after_data_rate:
            _drop(server)
        return "250 OK queued"


def _drop(server: SMTP) -> None:
    transport = server.transport
    if transport is not None:
        transport.abort()


class FaultSink(SmtpSink):
    """A :class:`SmtpSink` whose faults are switched by setting its attributes."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        # The same loop as the plain sink's controller, which is never started.
        self._controller = Controller(
            _FaultHandler(self),
            hostname="127.0.0.1",
            port=self.port,
            loop=self._controller.loop,
            decode_data=False,
        )
        self._random = random.Random(seed)
        self.tempfail_rate = 0.0
        self.drop_rate = 0.0
        self.drop_after_data_rate = 0.0
        self.reply_delay = 0.0
        self.permfail: set[str] = set()
        self.watch_pids: set[int] = set()
        #: Set when a held DATA starts waiting.
        self.holding = threading.Event()
        self._holds: list[float] = []
        self._released = threading.Event()
        self._owners: dict[tuple[str, int], int | None] = {}

    def hold_next(self, seconds: float, count: int = 1) -> None:
        """Keep the ``250`` of the next ``count`` messages for ``seconds`` each."""
        with self._lock:
            self._holds.extend([seconds] * count)
        self.holding.clear()
        self._released.clear()

    def release(self) -> None:
        """Answer every held message now (and stop holding new ones)."""
        with self._lock:
            self._holds.clear()
        self._released.set()

    def stop(self) -> None:
        self.release()
        super().stop()

    def take_hold(self) -> float:
        with self._lock:
            return self._holds.pop(0) if self._holds else 0.0

    async def wait_released(self, seconds: float) -> None:
        # A threading.Event: release() is called from the test's thread.
        await asyncio.to_thread(self._released.wait, seconds)

    async def pause(self) -> None:
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)

    def roll(self) -> float:
        with self._lock:
            return self._random.random()

    def owner_of(self, session: Session) -> int | None:
        """The watched pid at the other end of this session's connection."""
        peer = session.peer
        if not isinstance(peer, tuple):
            return None
        key = (str(peer[0]), int(peer[1]))
        if self._owners.get(key) is None:
            self._owners[key] = socket_owner(key[1], self.port, set(self.watch_pids))
        return self._owners[key]

    @property
    def fault_arrivals(self) -> list[FaultArrival]:
        return [a for a in self.arrivals if isinstance(a, FaultArrival)]

    def reset_faults(self) -> None:
        """Behave again (holds are released)."""
        self.tempfail_rate = self.drop_rate = self.drop_after_data_rate = 0.0
        self.reply_delay = 0.0
        self.permfail = set()
        self.release()
