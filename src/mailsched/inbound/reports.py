"""Read bounce and complaint reports out of a raw message: pure, no I/O.

Three readers, tried in this order on one parsed message:

- ``dsn``: a delivery status notification (RFC 3464), found by its ``message/delivery-status``
  part, or by a ``multipart/report; report-type=delivery-status`` whose status part came as
  ``text/plain``. One :class:`Report` per recipient block whose delivery failed or is delayed.
- ``arf``: a feedback report (RFC 5965), found the same way by ``message/feedback-report``.
  One :class:`Report` of kind ``COMPLAINT``, unless the feedback type is no complaint.
- ``flufl:<detector>``: anything else is given to flufl.bounce's heuristic detectors, the
  first one that finds addresses deciding. A standard report is not given to them, even when
  it says nothing failed (every recipient ``delivered``), unless its status part holds no
  recipient's fields at all (some MTAs name the recipients in the text only).

How a DSN recipient block is judged: its ``Action`` says whether the reporting MTA has given
up, so it decides when present: ``failed`` is HARD even with a 4.x.x status (the MTA retried
a transient failure until it gave up), ``delayed`` is SOFT even with a 5.x.x status (it is
still trying; a later DSN will say ``failed`` if it stops), ``delivered``, ``relayed`` and
``expanded`` are no failure at all. Only without a known Action does the status class decide:
5 is HARD, 4 is SOFT. The status is the ``Status`` field's, else the first enhanced code in the
``Diagnostic-Code``.

Hostile input: a report over :data:`MAX_REPORT_BYTES` is refused with
:class:`~mailsched.errors.ReportTooLarge`; anything smaller never raises. Before the email
package sees the bytes, line endings become LF, lines are cut at :data:`MAX_LINE` bytes, the
message is cut before its :data:`MAX_ENTITIES`-th ``Content-Type`` header (which bounds the
number and the nesting of MIME parts), and each ``Content-Type``/``Content-Disposition``
header is cut at :data:`MAX_PARAM_HEADER` bytes, because reading its parameters costs the
square of its length in the email package.
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses
from enum import StrEnum
from itertools import islice

from flufl.bounce import _scan as flufl_scan
from flufl.bounce import all_failures

from mailsched.errors import ReportTooLarge

#: Larger reports are refused: a bounce quoting a whole campaign email is well under this.
MAX_REPORT_BYTES = 1024 * 1024
#: Bytes kept of one line (RFC 5322 allows 998 plus CRLF).
MAX_LINE = 998
#: Content-Type headers parsed; the message is cut before the next one.
MAX_ENTITIES = 64
#: Bytes kept of one Content-Type or Content-Disposition header, folded lines included.
MAX_PARAM_HEADER = 1000
#: Bytes and lines of the message's start that flufl.bounce's heuristics are given; they cost
#: about 35 µs a line, and a bounce's text comes first.
HEURISTIC_BYTES = 64 * 1024
HEURISTIC_LINES = 2000
#: Recipient blocks read from one status part.
MAX_GROUPS = 100
#: Characters kept of one field's value before it is read.
MAX_FIELD = 998
#: Characters kept of a diagnostic.
MAX_DIAGNOSTIC = 500

#: Feedback types that are a recipient's complaint. ``not-spam`` is the opposite, and
#: ``auth-failure`` (RFC 6591) reports a failed DKIM/SPF check, not a person's wish.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})

_STATUS_PARTS = {
    "message/delivery-status": "dsn",
    "message/global-delivery-status": "dsn",
    "message/feedback-report": "arf",
}
_REPORT_TYPES = {"delivery-status": "dsn", "feedback-report": "arf"}
_ORIGINAL_PARTS = frozenset(
    {"message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers"}
)
_RECIPIENT_FIELDS = ("final-recipient", "original-recipient", "action", "status")
_NOT_FAILED = frozenset({"delivered", "relayed", "expanded"})

_ENHANCED_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"([245])\d\d(?!\d)")
_MSG_ID = re.compile(r"<[^<>\s]{1,900}>")
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,76}")
_PARAM_HEADER = re.compile(rb"(?im)^content-(?:type|disposition)[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*")
_CONTENT_TYPE_LINE = re.compile(rb"(?im)^content-type[ \t]*:")
_SPACE = re.compile(r"\s+")


class Kind(StrEnum):
    """What a report says about one recipient."""

    HARD = "hard"  # permanent failure: give up on the address
    SOFT = "soft"  # transient failure: the address may work later
    COMPLAINT = "complaint"  # the recipient reported the email as abuse, fraud, ...


@dataclass(frozen=True, slots=True)
class Report:
    """One recipient's bounce or complaint, as read from a report.

    ``recipient`` has no angle brackets and a lower-cased domain; ``message_id`` is the
    original message's, with its angle brackets; ``diagnostic`` is one line of at most
    500 characters (for a complaint, its feedback type). ``return_path`` is the
    original message's ``Return-Path``, as the receiving server quoted it (a feedback
    loop mails a fixed address: the quoted return path still names the delivery).
    """

    kind: Kind
    recipient: str | None
    status: str | None
    diagnostic: str | None
    message_id: str | None
    format: str
    return_path: str | None = None


def read_reports(raw: bytes) -> list[Report]:
    """The bounces and complaints ``raw`` (a whole message as received) reports; [] if none.

    Raises :class:`~mailsched.errors.ReportTooLarge` over :data:`MAX_REPORT_BYTES` and nothing
    else, whatever the input.
    """
    if len(raw) > MAX_REPORT_BYTES:
        raise ReportTooLarge(f"a report of {len(raw)} bytes; at most {MAX_REPORT_BYTES} are read")
    try:
        return _read(raw)
    except Exception:  # the email package and the detectors meet hostile input here: no verdict
        return []


def _read(raw: bytes) -> list[Report]:
    data = _bounded(raw)
    msg = email.message_from_bytes(data, policy=compat32)
    parts = list(islice(msg.walk(), MAX_ENTITIES * 2))
    found = _find_status_part(parts)
    if found is not None:
        reader, index = found
        reports = _arf(parts, index) if reader == "arf" else _dsn(parts, index)
        if reports is not None:
            return list(dict.fromkeys(reports))  # an MTA may repeat a recipient's block
    # The heuristics try dozens of patterns on every line: they read the message's start only.
    head = b"\n".join(data[:HEURISTIC_BYTES].split(b"\n", HEURISTIC_LINES)[:HEURISTIC_LINES])
    return _flufl(email.message_from_bytes(head, policy=compat32))


def _bounded(raw: bytes) -> bytes:
    data = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    for count, match in enumerate(_CONTENT_TYPE_LINE.finditer(data)):
        if count == MAX_ENTITIES:
            data = data[: match.start()]
            break
    lines = data.split(b"\n")
    if any(len(line) > MAX_LINE for line in lines):
        data = b"\n".join(line[:MAX_LINE] for line in lines)
    return _PARAM_HEADER.sub(_cut_param_header, data)


def _cut_param_header(match: re.Match[bytes]) -> bytes:
    header = match.group()
    if len(header) <= MAX_PARAM_HEADER:
        return header
    return header[:MAX_PARAM_HEADER].rstrip(b"\n") + b"\n"


def _find_status_part(parts: list[Message]) -> tuple[str, int] | None:
    for index, part in enumerate(parts):
        reader = _STATUS_PARTS.get(part.get_content_type())
        if reader is not None:
            return reader, index
    # A multipart/report whose status part is mislabelled (text/plain, most often).
    for index, part in enumerate(parts):
        if part.get_content_type() != "multipart/report":
            continue
        reader = _REPORT_TYPES.get(str(part.get_param("report-type") or "").strip().lower())
        payload = part.get_payload()
        if reader is not None and isinstance(payload, list) and len(payload) >= 2:
            status_part = payload[1]
            if not isinstance(status_part, Message) or status_part.get_content_maintype() != "text":
                continue
            for later in range(index + 1, len(parts)):
                if parts[later] is status_part:
                    return reader, later
    return None


def _dsn(parts: list[Message], index: int) -> list[Report] | None:
    """The failed and delayed recipients; None when the status part has no recipient's
    fields at all (some MTAs name them only in the text, for the heuristics to find)."""
    original = _original_fields(parts, index)
    message_id, return_path = _message_id(original), _return_path(original)
    blocks = [b for b in _blocks(parts[index]) if any(name in b for name in _RECIPIENT_FIELDS)]
    if not blocks:
        return None
    reports = (_dsn_recipient(block, message_id, return_path) for block in blocks)
    return [report for report in reports if report is not None]


def _dsn_recipient(
    block: dict[str, str], message_id: str | None, return_path: str | None
) -> Report | None:
    diagnostic = _one_line(block.get("diagnostic-code", ""), MAX_DIAGNOSTIC)
    status = _status(block.get("status", "")) or _status(diagnostic or "")
    action = block.get("action", "").strip().lower().split(" ", 1)[0]
    if action in _NOT_FAILED:
        return None
    if action == "failed":
        kind = Kind.HARD
    elif action == "delayed":
        kind = Kind.SOFT
    else:
        code = _SMTP_CODE.match(block.get("status", "").strip())
        status_class = status[0] if status else code.group(1) if code else None
        kinds = {"5": Kind.HARD, "4": Kind.SOFT}
        if status_class not in kinds:
            return None
        kind = kinds[status_class]
    # The original recipient is the address we sent to; the final one may be an alias's target.
    recipient = _address(block.get("original-recipient", "")) or _address(
        block.get("final-recipient", "")
    )
    return Report(kind, recipient, status, diagnostic, message_id, "dsn", return_path)


def _arf(parts: list[Message], index: int) -> list[Report] | None:
    """The complaint; None when the feedback part holds no fields at all."""
    fields: dict[str, str] = {}
    for block in _blocks(parts[index]):
        fields = block | fields
    if not fields:
        return None
    feedback_type = _SPACE.split(fields.get("feedback-type", "").strip().lower(), maxsplit=1)[0]
    # A feedback report without a type is taken for a complaint, the common case:
    # wrongly mailing someone who complained costs more than wrongly stopping.
    if feedback_type and feedback_type not in COMPLAINT_TYPES:
        return []
    original = _original_fields(parts, index)
    recipient = (
        _address(fields.get("original-rcpt-to", ""))
        or _address(fields.get("removal-recipient", ""))
        or _single_address(original.get("to", ""))
    )
    diagnostic = _one_line(feedback_type, MAX_DIAGNOSTIC)
    return [
        Report(
            Kind.COMPLAINT,
            recipient,
            None,
            diagnostic,
            _message_id(original),
            "arf",
            # The original's envelope sender, as the report gives it (RFC 5965), or
            # as the receiving server quoted it in the original's headers.
            _return_path({"return-path": fields.get("original-mail-from", "")})
            or _return_path(original),
        )
    ]


def _flufl(msg: Message) -> list[Report]:
    detectors = getattr(flufl_scan, "_DETECTORS", None)
    if not isinstance(detectors, list):  # a flufl.bounce that hides its detectors
        return _flufl_reports(*all_failures(msg), "flufl")
    for detector in detectors:
        try:
            temporary, permanent = detector().process(msg)
        except Exception:  # one heuristic failing on odd input says nothing; try the next
            continue
        if temporary or permanent:
            return _flufl_reports(temporary, permanent, f"flufl:{detector.__name__.lower()}")
    return []


def _flufl_reports(
    temporary: Iterable[bytes], permanent: Iterable[bytes], fmt: str
) -> list[Report]:
    hard = {_address(a.decode("utf-8", "replace")) for a in permanent} - {None}
    soft = {_address(a.decode("utf-8", "replace")) for a in temporary} - {None} - hard
    return [
        *(Report(Kind.HARD, a, None, None, None, fmt) for a in sorted(a for a in hard if a)),
        *(Report(Kind.SOFT, a, None, None, None, fmt) for a in sorted(a for a in soft if a)),
    ]


def _blocks(part: Message) -> list[dict[str, str]]:
    """The groups of fields of a status part, however the email package left it."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks: list[dict[str, str]] = []
        for sub in islice(payload, MAX_GROUPS):
            if not isinstance(sub, Message):
                continue
            blocks.append(_first_fields((str(k), _clean(str(v))) for k, v in sub.raw_items()))
            rest = sub.get_payload()
            if isinstance(rest, str) and rest.strip():  # message/global-delivery-status
                blocks.extend(_text_blocks(rest))
        return blocks[:MAX_GROUPS]
    return _text_blocks(_text(part))


def _text_blocks(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    pairs: list[tuple[str, str]] = []
    for line in [*text.split("\n", MAX_GROUPS * 20)[: MAX_GROUPS * 20], ""]:
        if not line.strip():
            if pairs:
                blocks.append(_first_fields(pairs))
                pairs = []
                if len(blocks) == MAX_GROUPS:
                    break
        elif line[0] in " \t" and pairs:
            name, value = pairs[-1]
            pairs[-1] = (name, (value + " " + line.strip())[:MAX_FIELD])
        else:
            name, colon, value = line.partition(":")
            if colon and _FIELD_NAME.fullmatch(name.strip()):
                pairs.append((name.strip(), value.strip()))
    return blocks


def _first_fields(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name.lower(), value[:MAX_FIELD])
    return fields


def _original_fields(parts: list[Message], index: int) -> dict[str, str]:
    """The headers of the reported message, from the first part after the status part
    that holds it."""
    for part in parts[index + 1 :]:
        if part.get_content_type() not in _ORIGINAL_PARTS:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            first = payload[0] if payload else None
            if isinstance(first, Message):
                return _first_fields((str(k), _clean(str(v))) for k, v in first.raw_items())
            return {}
        blocks = _text_blocks(_text(part))
        return blocks[0] if blocks else {}
    return {}


def _text(part: Message) -> str:
    body = part.get_payload(decode=True)
    if not isinstance(body, bytes):
        return ""
    return body[:MAX_REPORT_BYTES].decode("utf-8", "replace")


def _status(text: str) -> str | None:
    match = _ENHANCED_STATUS.search(text[:MAX_FIELD])
    if match is None:
        return None
    return ".".join(str(int(group)) for group in match.groups())


def _address(value: str) -> str | None:
    """The address of a field like ``rfc822; User@Example.COM``, domain lower-cased."""
    kind, semicolon, rest = value.partition(";")
    text = rest if semicolon else kind
    tokens = _clean(text).strip().split()
    if not tokens:
        return None
    address = tokens[0].strip("<>")
    local, at, domain = address.rpartition("@")
    if not (at and local and domain) or len(address) > 320 or "<" in address or ">" in address:
        return None
    if not address.isprintable() or "\ufffd" in address:
        return None
    return f"{local}@{domain.lower()}"


def _single_address(value: str) -> str | None:
    addresses = [address for _, address in getaddresses([_clean(value)[:MAX_FIELD]]) if address]
    return _address(addresses[0]) if len(addresses) == 1 else None


def _message_id(fields: dict[str, str]) -> str | None:
    match = _MSG_ID.search(_clean(fields.get("message-id", "")))
    if match is None or not match.group().isprintable():
        return None
    return match.group()


def _return_path(fields: dict[str, str]) -> str | None:
    """The quoted ``Return-Path``'s address (a null one, ``<>``, is none)."""
    value = _clean(fields.get("return-path", "")).strip()
    if not value.startswith("<") or not value.endswith(">") or len(value) > 322:
        return None
    return _address(value)


def _one_line(value: str, limit: int) -> str | None:
    text = _SPACE.sub(" ", _clean(value[: limit * 4])).strip()
    text = "".join(ch for ch in text if ch.isprintable())[:limit].strip()
    return text or None


def _clean(value: str) -> str:
    # compat32 keeps undecodable bytes as surrogates; they are no text to hand on.
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate no byte made
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
