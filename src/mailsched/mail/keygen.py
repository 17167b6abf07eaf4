"""``mailsched dkim keygen``: a new DKIM private key and the DNS record that publishes it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailsched.config import DkimKey
from mailsched.mail.dkim import public_record

#: A DNS TXT record's character-strings hold at most 255 bytes each (RFC 1035).
_STRING = 255


def write_key(path: Path, algorithm: Literal["rsa", "ed25519"]) -> str:
    """Write a new private key to ``path`` as PKCS#8 PEM, readable by its owner only,
    and return the TXT record's value. Raises :class:`FileExistsError` rather than
    replace a key whose public half may already be published."""
    key: DkimKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: never over an existing key; 0o600 from the start, not chmod after.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    return public_record(key)


def txt_record(selector: str, domain: str, value: str) -> str:
    """The zone-file line: ``sel._domainkey.example.com. TXT "v=DKIM1; …"``, the value
    split into strings of at most 255 characters (resolvers join them)."""
    strings = " ".join(f'"{value[i : i + _STRING]}"' for i in range(0, len(value), _STRING))
    return f"{selector}._domainkey.{domain.rstrip('.')}. TXT {strings}"
