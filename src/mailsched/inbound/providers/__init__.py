"""Email providers' event webhooks, pure: each module checks its provider's credentials on
the raw request and maps the provider's events to our :class:`~mailsched.inbound.reports.Report`.

- :mod:`.sendgrid`: the Event Webhook, ECDSA P-256 signatures.
- :mod:`.mailgun`: HMAC-SHA256 signatures inside the body.
- :mod:`.postmark`: HTTP basic auth on the webhook URL.
- :mod:`.ses`: Amazon SES notifications through SNS, RSA signatures checked against a
  configured certificate.

A provider raises :class:`~mailsched.errors.Unauthenticated` for a call whose credentials do
not check out, and :class:`~mailsched.errors.Invalid` for an authenticated body it cannot
read. Events that are no bounce or complaint (delivered, open, click, ...) give no report.
Each report carries the Message-ID the provider gave, if any; :func:`matched` ties it to a
delivery.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

from mailsched.errors import Invalid
from mailsched.inbound.reports import Report
from mailsched.mail.message import delivery_of_message_id

#: Larger request bodies are refused (413). SendGrid posts its events in batches, the
#: others one event per call; an event is well under a kilobyte without a bounce's content.
MAX_BODY_BYTES = 1024 * 1024
#: Characters kept of a diagnostic, as for the bounce mailbox's reports.
MAX_DIAGNOSTIC = 500

_SPACE = re.compile(r"\s+")


class Provider(Protocol):
    """One provider's webhook."""

    def authenticate(self, body: bytes, headers: Mapping[str, str]) -> Any:
        """The parsed body, once the call's credentials check out; raises
        :class:`~mailsched.errors.Unauthenticated` or :class:`~mailsched.errors.Invalid`."""
        ...

    def reports(self, document: Any) -> list[Report]:
        """The bounces and complaints ``document`` (from :meth:`authenticate`) reports."""
        ...


def parse_json(body: bytes) -> Any:
    """``body`` as JSON; :class:`Invalid` (a 422) if it is not."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Invalid([("body", f"not a JSON document in UTF-8: {exc}")]) from exc
    except RecursionError as exc:
        raise Invalid([("body", "nested too deeply")]) from exc


def text(value: object) -> str | None:
    """``value`` if it is a non-empty string."""
    return value if isinstance(value, str) and value.strip() else None


def field(document: object, *path: str) -> object:
    """``document[path[0]][path[1]]...``, or ``None`` where an object or a key is missing."""
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def one_line(*parts: object) -> str | None:
    """The non-empty ``parts`` on one line of at most :data:`MAX_DIAGNOSTIC` characters."""
    said = " ".join(_SPACE.sub(" ", str(p)).strip() for p in parts if p not in (None, ""))
    return said[:MAX_DIAGNOSTIC] or None


def address(value: object) -> str | None:
    """A reported recipient: no angle brackets, its domain lower-cased."""
    found = text(value)
    if found is None:
        return None
    found = found.strip().strip("<>")
    local, at, domain = found.rpartition("@")
    return f"{local}@{domain.lower()}" if at else found


def ours(value: object) -> str | None:
    """``value`` with angle brackets if it is a Message-ID that
    :func:`~mailsched.mail.message.message_id` may have made."""
    found = text(value)
    if found is None or delivery_of_message_id(found) is None:
        return None
    found = found.strip()
    return found if found.startswith("<") else f"<{found}>"


def matched(report: Report, domain: str) -> tuple[int, int] | None:
    """The ``(campaign id, delivery id)`` that ``report`` is about: its Message-ID is one of
    ours, on the sender ``domain``."""
    if report.message_id is None:
        return None
    return delivery_of_message_id(report.message_id, domain)
