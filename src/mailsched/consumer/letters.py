"""Letters for claimed deliveries, from one message template per campaign.

The MIME message is built once per campaign; each recipient only adds To, Date,
Message-ID and the List-Unsubscribe pair (building a whole message per recipient
measured about 1k msgs/s here, against about 4k for sending prepared bytes). A
templated campaign is the exception: it is rendered per recipient.

Encoding a large message takes the :mod:`email` package well over the 50 ms an
event loop may be held (about 150 ms for a 1 MiB body and its HTML), and compiling
templates can take 100 ms, so :meth:`LetterFactory.build` does both in a thread.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from mailsched.domain.model import Campaign
from mailsched.errors import PermanentSendError
from mailsched.mail import Letter
from mailsched.mail.message import MessageTemplate, Unsubscribe
from mailsched.mail.mime import LARGE
from mailsched.mail.templates import MAX_BODY_BYTES

#: The unsubscribe targets of one recipient: ``(user_id, address) -> Unsubscribe``.
Links = Callable[[int, str], Unsubscribe]
#: Signs one letter's bytes (mailsched.mail.dkim): ``message -> signed message``.
Sign = Callable[[bytes], bytes]
#: The envelope sender of one delivery: ``delivery_id -> address`` (a VERP return path).
ReturnPaths = Callable[[int], str]

_T = TypeVar("_T")


class LetterFactory:
    """Makes :class:`Letter` objects, keeping the templates of recent campaigns.

    The templates kept are the most recently used, up to ``max_bytes`` of message
    text: a worker interleaving thousands of small campaigns must not rebuild a
    template per letter (that measured ~1 ms each), nor keep a thousand 1 MiB bodies.
    With ``links``, every letter carries ``List-Unsubscribe`` and
    ``List-Unsubscribe-Post`` (RFC 8058) for its recipient. With ``return_path``,
    each letter's envelope sender is its delivery's own address (bounces name the
    delivery); the From header stays ``sender`` either way. A templated body may
    render to at most ``max_body_bytes``. With ``sign``, each letter is signed
    (DKIM) where it is made: on the event loop for a plain campaign (0.13 to 0.16 ms
    with Ed25519, 0.5 to 0.65 ms with RSA-2048), in the thread for a templated or a
    large one. Sending every signature to the thread was no faster (one worker
    with Ed25519: 0.49 to 0.64 of unsigned, against 0.60 to 0.84 on the loop; see
    docs/benchmarks.md).
    """

    def __init__(
        self,
        sender: str,
        max_bytes: int = 64 * 2**20,
        links: Links | None = None,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        return_path: ReturnPaths | None = None,
        sign: Sign | None = None,
    ) -> None:
        self._sender = sender
        self._sign = sign
        self._return_path = return_path
        self._max_bytes = max_bytes
        self._max_body_bytes = max_body_bytes
        self._bytes = 0
        self._links = links
        self._templates: OrderedDict[int, MessageTemplate] = OrderedDict()
        # One thread, not asyncio's pool of several: the work is Python, so more
        # threads would not make more letters, only more threads for the event
        # loop to wait behind for the GIL (with six, /healthz waited up to 1.1 s).
        self._executor: ThreadPoolExecutor | None = None

    async def build(
        self,
        campaign: Campaign,
        delivery_id: int,
        recipient: str,
        date: datetime,
        *,
        name: str | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> Letter:
        """The letter for one delivery of ``campaign``; what may take long is done in
        a thread: encoding a large campaign's message, and rendering each letter of a
        templated campaign.

        Raises :class:`PermanentSendError` when no message can be made for this
        recipient (a template that fails on their variables, an unusable address):
        trying again would fail the same way.

        The cache is only used here, on the event loop: threads never share it.
        """
        template = self._cached(campaign.id)
        if template is None:
            size = len(campaign.subject) + len(campaign.body) + len(campaign.html_body or "")
            # Compiling templates takes up to some 100 ms of Python (mailsched.mail.templates).
            if campaign.templated or size > LARGE:
                template = await self._in_thread(self._new, campaign)
            else:
                template = self._new(campaign)
            template = self._remember(campaign.id, template)
        args = (campaign, template, delivery_id, recipient, date, name, variables)
        if template.templated or (self._sign is not None and template.size > LARGE):
            # Hashing a large body for its signature takes long too (86 ms for 2 MB).
            # A render is bounded (mailsched.mail.templates), but with encoding a
            # large body it is still more than the event loop may wait.
            return await self._in_thread(self._letter, *args)
        return self._letter(*args)

    async def _in_thread(self, function: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="letters")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _new(self, campaign: Campaign) -> MessageTemplate:
        try:
            return MessageTemplate(
                campaign.id,
                self._sender,
                campaign.subject,
                campaign.body,
                html_body=campaign.html_body,
                templated=campaign.templated,
                max_body_bytes=self._max_body_bytes,
            )
        except ValueError as exc:
            raise PermanentSendError(f"cannot build the message: {exc}") from exc

    def _letter(
        self,
        campaign: Campaign,
        template: MessageTemplate,
        delivery_id: int,
        recipient: str,
        date: datetime,
        name: str | None,
        variables: Mapping[str, Any] | None,
    ) -> Letter:
        try:
            unsubscribe = None if self._links is None else self._links(campaign.user_id, recipient)
            data = template.render(
                recipient,
                delivery_id,
                date,
                name=name,
                variables=variables,
                unsubscribe=unsubscribe,
            )
        except ValueError as exc:
            # Whatever a template raises comes out as a TemplateProblem, a ValueError:
            # the next attempt would fail the same way, so this one is permanent.
            raise PermanentSendError(f"cannot build the message: {exc}") from exc
        if self._sign is not None:
            data = self._sign(data)
        return Letter(
            campaign_id=campaign.id,
            delivery_id=delivery_id,
            sender=self._sender if self._return_path is None else self._return_path(delivery_id),
            recipient=recipient,
            data=data,
        )

    def _cached(self, campaign_id: int) -> MessageTemplate | None:
        template = self._templates.get(campaign_id)
        if template is not None:
            self._templates.move_to_end(campaign_id)
        return template

    def _remember(self, campaign_id: int, template: MessageTemplate) -> MessageTemplate:
        # Two letters of a new campaign may have made its template at once: keep one.
        kept = self._templates.get(campaign_id)
        if kept is not None:
            return kept
        self._templates[campaign_id] = template
        self._bytes += template.size
        while self._bytes > self._max_bytes and len(self._templates) > 1:
            self._bytes -= self._templates.popitem(last=False)[1].size
        return template
