"""Standard Webhooks 1.0 signing: the secret, and the three headers of a request.

The secret is ``whsec_`` and the base64 of 32 random bytes; its key is those bytes.
Each request carries::

    webhook-id: <the message id: an event id, or batch_<key>; the same at every retry>
    webhook-timestamp: <unix seconds of this attempt>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>

The signature is made by the ``standardwebhooks`` package, the reference
implementation that receivers verify with, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import math
import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook

PREFIX = "whsec_"


def new_secret() -> str:
    """A new endpoint secret: ``whsec_`` + base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def headers(secret: str, message_id: str, at: datetime, body: str) -> dict[str, str]:
    """The headers that sign ``body``, sent at ``at``, as message ``message_id``."""
    # standardwebhooks reads the time as UTC whatever its zone: give it UTC.
    utc = at.astimezone(UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(utc.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, utc, body),
        "content-type": "application/json",
    }
