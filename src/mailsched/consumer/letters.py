"""Letters for claimed deliveries, from one message template per campaign.

The MIME message is built once per campaign; each recipient only adds To, Date
and Message-ID (building a whole message per recipient measured about 1k msgs/s
here, against about 4k for sending prepared bytes).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

from mailsched.domain.model import Campaign
from mailsched.mail import Letter
from mailsched.mail.message import MessageTemplate


class LetterFactory:
    """Makes :class:`Letter` objects, keeping the templates of recent campaigns."""

    def __init__(self, sender: str, max_templates: int = 256) -> None:
        self._sender = sender
        self._max = max_templates
        self._templates: OrderedDict[int, MessageTemplate] = OrderedDict()

    def letter(
        self, campaign: Campaign, delivery_id: int, recipient: str, date: datetime
    ) -> Letter:
        """The letter for one delivery of ``campaign``."""
        template = self._template(campaign)
        return Letter(
            campaign_id=campaign.id,
            delivery_id=delivery_id,
            sender=self._sender,
            recipient=recipient,
            data=template.render(recipient, delivery_id, date),
        )

    def _template(self, campaign: Campaign) -> MessageTemplate:
        template = self._templates.get(campaign.id)
        if template is None:
            template = MessageTemplate(campaign.id, self._sender, campaign.subject, campaign.body)
            self._templates[campaign.id] = template
            if len(self._templates) > self._max:
                self._templates.popitem(last=False)
        else:
            self._templates.move_to_end(campaign.id)
        return template
