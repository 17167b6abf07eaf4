"""The embedded Mailer: each letter becomes an ``.eml`` file instead of an SMTP transaction.

Files land at ``{directory}/campaign-{campaign_id}/{delivery_id}.eml`` and hold exactly
the letter's bytes, so any mail client opens them. A resent delivery replaces its file,
which makes retries idempotent here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from pathlib import Path

from mailsched.errors import TransientSendError
from mailsched.mail import Accepted, Letter

log = logging.getLogger(__name__)


class OutboxMailer:
    """Writes letters to ``.eml`` files under one directory."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    async def send(self, letter: Letter) -> Accepted:
        """Write the letter atomically and durably, off the event loop.

        Raises :class:`~mailsched.errors.TransientSendError` when the file cannot be
        written: a full or read-only disk is usually fixed by an operator, not by
        giving up on the recipient.
        """
        letter.check_time()
        try:
            path = await asyncio.to_thread(self._write, letter)
        except OSError as exc:
            raise TransientSendError(
                f"cannot write campaign {letter.campaign_id} delivery {letter.delivery_id} "
                f"to the outbox: {exc.strerror or exc}"
            ) from exc
        log.info(
            "wrote campaign %s delivery %s to %s", letter.campaign_id, letter.delivery_id, path
        )
        return Accepted()

    async def close(self) -> None:
        """Nothing stays open between letters."""

    def _write(self, letter: Letter) -> Path:
        folder = self._directory / f"campaign-{letter.campaign_id}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{letter.delivery_id}.eml"
        # A reader (or a crash) must never see half a letter, so the bytes go to a
        # temporary file in the same directory and are renamed over the target.
        fd, temporary = tempfile.mkstemp(
            dir=folder, prefix=f".{letter.delivery_id}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(letter.data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_directory(folder)
        return target


def _fsync_directory(folder: Path) -> None:
    # The rename is only durable once the directory entry is: the caller records the
    # delivery as sent as soon as send() returns.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
