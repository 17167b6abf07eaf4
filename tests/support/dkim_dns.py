"""A test DNS resolver for dkimpy: the DKIM keys' TXT records, by name."""

from __future__ import annotations

import dkim

from mailsched.config import DkimKey
from mailsched.mail.dkim import public_record


class DkimDns:
    """``selector._domainkey.domain.`` -> the TXT record publishing a key."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}

    def publish(self, selector: str, domain: str, key: DkimKey) -> None:
        self.publish_record(selector, domain, public_record(key))

    def publish_record(self, selector: str, domain: str, value: str) -> None:
        self.records[f"{selector}._domainkey.{domain}.".encode()] = value.encode()

    def lookup(self, name: bytes, timeout: int = 5) -> bytes | None:
        return self.records.get(name)

    def verify(self, message: bytes) -> bool:
        """Whether dkimpy finds the message's first DKIM signature valid."""
        return bool(dkim.verify(message, dnsfunc=self.lookup))


def signed_headers(message: bytes) -> list[str]:
    """The ``h=`` tag of the message's DKIM signature, lowercase, in order."""
    from dkim.util import parse_tag_value

    headers, _ = dkim.rfc822_parse(message)
    value = next(v for n, v in headers if n.lower() == b"dkim-signature")
    tags = parse_tag_value(value)
    return [name.strip().decode().lower() for name in tags[b"h"].split(b":")]
