"""Campaign messages: MIME-encode a campaign once, then stamp each recipient's headers onto it.

Building an :class:`~email.message.EmailMessage` per recipient caps at about a thousand
messages a second; joining pre-encoded bytes is several times faster. So
:class:`MessageTemplate` asks the :mod:`email` package once for the part every
recipient shares (``From``, ``Subject``, the MIME headers and the encoded body: text,
or text and HTML as multipart/alternative) and :meth:`MessageTemplate.render` puts
``To``, ``Date``, ``Message-ID`` and the ``List-Unsubscribe`` pair in front of it.

A *templated* campaign (its subject or bodies use :mod:`mailsched.mail.templates`)
is the exception: it is rendered and MIME-encoded per recipient, which is slower.

Everything is ASCII with CRLF line endings, except a recipient or sender whose local
part is not ASCII: RFC 6532 puts that address into the header as raw UTF-8, and such a
message may only travel over SMTP with the SMTPUTF8 extension (RFC 6531).
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.header import Header
from email.message import EmailMessage
from typing import Any

import idna

from mailsched.mail.headers import header_text
from mailsched.mail.mime import LARGE, large_body
from mailsched.mail.templates import MAX_BODY_BYTES, CampaignTemplates, context

# Header values with line breaks would let an address smuggle in headers of its own;
# whitespace and the list separators would turn one recipient into several.
_UNSAFE = re.compile("[\x00-\x20\x7f\x85\u2028\u2029<>,;]")

# The shared part stays 7-bit whatever the body holds: any relay accepts it, with no
# need for the 8BITMIME extension.
_POLICY = email.policy.SMTP.clone(cte_type="7bit")
_UTF8_POLICY = email.policy.SMTPUTF8.clone(cte_type="7bit")

# What may not appear in a URL inside <...>: it would end the bracket or the header.
_UNSAFE_URL = re.compile(r"[\x00-\x20\x7f<>]")
# Control characters and line boundaries in a display name become spaces: a name is
# cosmetic, and the API refuses them anyway; this is the second lock against header
# injection, and it keeps the email package from refusing the header at send time.
_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]+")

# What message_id makes: ASCII digits without leading zeros (ids are BIGINTs), brackets
# optional, both or neither.
_OUR_MESSAGE_ID = re.compile(
    r"(?P<open><)?c(?P<campaign>[1-9][0-9]{0,18})\.d(?P<delivery>[1-9][0-9]{0,18})"
    r"@(?P<domain>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?(open)>)"
)

_ONE_CLICK = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Where one recipient unsubscribes: an HTTPS URL that takes a one-click POST
    (RFC 8058), and optionally a ``mailto:`` URL (RFC 2369)."""

    url: str
    mailto: str | None = None


def wire_address(address: str) -> str:
    """Return ``address`` as it goes into headers and the SMTP envelope.

    An internationalised domain becomes its punycode A-labels (``bücher.de`` →
    ``xn--bcher-kva.de``) so that it needs no extension. A non-ASCII local part is kept
    as UTF-8: only an SMTPUTF8 server can carry it. Raises :class:`ValueError` for an
    address with control characters, whitespace, ``<>,;`` or no ``@``.
    """
    if _UNSAFE.search(address):
        raise ValueError("an address may not contain control characters, spaces or <>,;")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("an address needs a local part and a domain")
    if address.isascii():
        return address
    return f"{local}@{ascii_domain(domain)}"


def ascii_domain(domain: str) -> str:
    """Return ``domain`` with IDNA 2008 (UTS #46) A-labels; ValueError if it has none."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"not a valid internationalised domain: {exc}") from exc


def sender_domain(sender: str) -> str:
    """The ASCII domain of ``sender``, as used on the right of a Message-ID."""
    return wire_address(sender).rpartition("@")[2]


def message_id(campaign_id: int, delivery_id: int, sender: str) -> str:
    """The Message-ID of one delivery, the same on every attempt.

    A retry after a lost reply sends the same Message-ID again, so the receiving side
    (and our own checks) can recognise the duplicate.
    """
    return f"<c{campaign_id}.d{delivery_id}@{sender_domain(sender)}>"


def delivery_of_message_id(text: str, domain: str | None = None) -> tuple[int, int] | None:
    """The ``(campaign id, delivery id)`` that a Message-ID made by :func:`message_id` names,
    with or without its angle brackets (providers report it either way); ``None`` for any
    other. Given ``domain`` (ASCII, as :func:`sender_domain` makes it), only a Message-ID on
    that domain is ours."""
    found = _OUR_MESSAGE_ID.fullmatch(text.strip())
    if found is None:
        return None
    if domain is not None and found["domain"].lower() != domain.lower():
        return None
    return int(found["campaign"]), int(found["delivery"])


def display_name(name: str) -> bytes:
    """``name`` as the phrase before ``<address>``: a quoted string when it is ASCII, RFC 2047
    encoded words (folded) when it is not. Control characters become spaces."""
    name = _CONTROL.sub(" ", name).strip()
    if not name:
        return b""
    if name.isascii():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}"'.encode("ascii")
    return Header(name, "utf-8", header_name="To").encode(linesep="\r\n").encode("ascii")


def _to(recipient: str, name: str | None) -> bytes:
    address = wire_address(recipient).encode("utf-8")
    phrase = display_name(name) if name else b""
    return phrase + b" <" + address + b">" if phrase else address


def _unsubscribe_headers(unsubscribe: Unsubscribe) -> bytes:
    urls = (
        [unsubscribe.url] if unsubscribe.mailto is None else [unsubscribe.url, unsubscribe.mailto]
    )
    for url in urls:
        if _UNSAFE_URL.search(url) or not url.isascii():
            raise ValueError("an unsubscribe URL may not contain spaces, controls or <>")
    # One URL per line: each can be long (the token holds the address).
    value = ",\r\n ".join(f"<{url}>" for url in urls)
    return b"List-Unsubscribe: " + value.encode("ascii") + b"\r\n" + _ONE_CLICK


# Longer than this, an ASCII word cannot be folded within a line: encoded words can.
_LONGEST_ASCII_WORD = 900


def subject_header(subject: str) -> bytes:
    """The ``Subject`` header line, folded, with its CRLF.

    The :mod:`email` package's own folding is quadratic in the length of a subject
    (a 998-character non-ASCII one took 25 to 80 ms here, and much longer ones
    seconds), so the header is made with :class:`~email.header.Header`, which is
    linear (under 3 ms for any 998 characters). ASCII folds at spaces only, so
    that unfolding gives the subject back; anything else becomes RFC 2047 words.
    """
    header_text(subject)
    if (
        subject.isascii()
        and "=?" not in subject
        and max(len(word) for word in subject.split(" ")) < _LONGEST_ASCII_WORD
    ):
        header = Header(subject, "us-ascii", header_name="Subject", continuation_ws=" ")
        return b"Subject: " + header.encode(splitchars=" ", linesep="\r\n").encode() + b"\r\n"
    header = Header(subject, "utf-8", header_name="Subject")
    return b"Subject: " + header.encode(linesep="\r\n").encode("ascii") + b"\r\n"


#: An ASCII address that the email package writes into ``From`` as it is.
_PLAIN_FROM = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
#: The longest line the email package sends as 7bit (the policy's line length).
_SEVEN_BIT_LINE = _POLICY.max_line_length or 78
_PLAIN_HEADERS = (
    b'\r\nContent-Type: text/plain; charset="utf-8"'
    b"\r\nContent-Transfer-Encoding: 7bit\r\nMIME-Version: 1.0\r\n\r\n"
)


def plain_part(from_: str, body: str) -> bytes | None:
    """What :func:`_shared_part` makes of a text-only ``body`` after the subject, byte
    for byte, made without the :mod:`email` package when the body goes as 7bit (ASCII,
    no line over 78 characters) and ``From`` is a plain ASCII address; else ``None``.

    The email package takes about half a millisecond for it: once per campaign, but
    once per recipient in a templated campaign. A property test holds the two equal.
    """
    if len(from_) > 70 or not body.isascii() or not _PLAIN_FROM.fullmatch(from_):
        return None
    lines = body.encode("ascii").splitlines()
    if any(len(line) > _SEVEN_BIT_LINE for line in lines):
        return None
    return b"From: " + from_.encode("ascii") + _PLAIN_HEADERS + b"\r\n".join(lines) + b"\r\n"


def _shared_part(from_: str, subject: str, body: str, html_body: str | None) -> bytes:
    """``From``, ``Subject``, the MIME headers and the encoded body or bodies."""
    subject_line = subject_header(subject)
    if html_body is None:
        plain = plain_part(from_, body)
        if plain is not None:
            return subject_line + plain
    if len(body) + len(html_body or "") > LARGE:
        return (
            b"From: " + from_.encode("utf-8") + b"\r\n" + subject_line + large_body(body, html_body)
        )
    # A sender with a UTF-8 local part needs SMTPUTF8 anyway, so its headers may
    # as well be raw UTF-8 (RFC 6532) instead of encoded words.
    message = EmailMessage(policy=_POLICY if from_.isascii() else _UTF8_POLICY)
    message["From"] = from_
    message.set_content(body)
    if html_body is not None:
        message.add_alternative(html_body, subtype="html")
    return subject_line + message.as_bytes()


class MessageTemplate:
    """One campaign's message, encoded once; :meth:`render` makes each recipient's copy."""

    __slots__ = (
        "_date_cache",
        "_domain",
        "_from",
        "_shared",
        "_templates",
        "campaign_id",
        "sender",
        #: About how many bytes the template keeps (see LetterFactory).
        "size",
    )

    def __init__(
        self,
        campaign_id: int,
        sender: str,
        subject: str,
        body: str,
        html_body: str | None = None,
        templated: bool = False,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        """Encode ``From``, ``Subject``, the MIME headers and the bodies with :mod:`email`.

        A non-ASCII subject is RFC 2047 encoded and long subjects are folded; a body
        goes as 7bit when it is short-lined ASCII, else as quoted-printable or base64,
        whichever the email package finds shorter. With ``html_body`` the message is
        multipart/alternative (text, then HTML). With ``templated`` the subject and
        bodies are compiled here and encoded per recipient by :meth:`render`, each
        rendered body at most ``max_body_bytes``.

        Raises :class:`ValueError` for a sender or subject that could inject headers,
        and :class:`~mailsched.mail.templates.TemplateProblem` (a ValueError) for a
        template that cannot be used.
        """
        from_ = wire_address(sender)
        header_text(subject)
        self.campaign_id = campaign_id
        self.sender = sender
        self._from = from_
        self._domain = from_.rpartition("@")[2]
        self._templates: CampaignTemplates | None = None
        self._shared = b""
        if templated:
            self._templates = CampaignTemplates(
                subject, body, html_body, max_body_bytes=max_body_bytes
            )
            self.size = len(subject) + len(body) + len(html_body or "")
        else:
            self._shared = _shared_part(from_, subject, body, html_body)
            self.size = len(self._shared)
        # One (second, offset) -> text pair, swapped as a whole so that threads
        # sharing a template never see one half of it updated.
        self._date_cache: tuple[tuple[float, timedelta], bytes] | None = None

    @property
    def templated(self) -> bool:
        """Whether each recipient's copy is rendered from templates."""
        return self._templates is not None

    def render(
        self,
        recipient: str,
        delivery_id: int,
        date: datetime,
        *,
        name: str | None = None,
        variables: Mapping[str, Any] | None = None,
        unsubscribe: Unsubscribe | None = None,
    ) -> bytes:
        """The RFC 5322 bytes for ``recipient``: ``To``, ``Date``, ``Message-ID``, the
        ``List-Unsubscribe`` headers when ``unsubscribe`` is given, then the rest.

        ``name`` goes into ``To`` as the display name; in a templated campaign,
        ``name``, ``variables`` and ``recipient`` (as ``email``) are what the templates
        see. ``date`` must be timezone-aware. Raises :class:`ValueError` for an unsafe
        recipient (see :func:`wire_address`) or unsubscribe URL, a naive ``date``, or a
        template that cannot be rendered for this recipient
        (:class:`~mailsched.mail.templates.TemplateProblem`).
        """
        to = _to(recipient, name)
        message_id = f"<c{self.campaign_id}.d{delivery_id}@{self._domain}>".encode("ascii")
        shared = self._shared
        if self._templates is not None:
            rendered = self._templates.render(context(recipient, name, variables))
            shared = _shared_part(self._from, rendered.subject, rendered.body, rendered.html_body)
        return b"".join(
            (
                b"To: ",
                to,
                b"\r\nDate: ",
                self._date(date),
                b"\r\nMessage-ID: ",
                message_id,
                b"\r\n",
                b"" if unsubscribe is None else _unsubscribe_headers(unsubscribe),
                shared,
            )
        )

    def _date(self, date: datetime) -> bytes:
        # Formatting costs several times more than the rest of render(), and a
        # campaign sends many messages within the same second.
        offset = date.utcoffset()
        if offset is None:
            raise ValueError("the date must be timezone-aware")
        key = (date.timestamp() // 1, offset)
        cache = self._date_cache
        if cache is not None and cache[0] == key:
            return cache[1]
        value = email.utils.format_datetime(date).encode("ascii")
        self._date_cache = (key, value)
        return value
