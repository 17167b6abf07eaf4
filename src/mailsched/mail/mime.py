"""The MIME body of a large message, made without the :mod:`email` package's encoders.

On a body of 1 MiB those hold the GIL for tens of milliseconds at a time
(``str.translate`` for quoted-printable, regular expressions over the whole
payload when it is written out): with one thread building such a message, the
event loop waited up to 112 ms to run. Here each C call is a few milliseconds at
most (``base64.encodebytes`` of 1 MiB is about 3), so a thread making a large
message leaves the event loop alone.

Large bodies always go as base64: UTF-8 text of any line length, 7-bit on the wire.
"""

from __future__ import annotations

import base64
import secrets

#: Above this many characters in its bodies, a message is made here (about 10 ms
#: of the email package's work).
LARGE = 64 * 1024


def _text_part(text: str, subtype: bytes) -> bytes:
    # Line breaks in text are CRLF in canonical form (RFC 2045), whatever the source
    # had; bytes.splitlines knows CR and LF only, as the email package does.
    canonical = b"\r\n".join(text.encode("utf-8").splitlines()) + b"\r\n"
    return (
        b"Content-Type: text/" + subtype + b'; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(canonical).replace(b"\n", b"\r\n")
    )


def large_body(body: str, html_body: str | None) -> bytes:
    """``MIME-Version``, the content headers and the base64 bodies: text, or text and
    HTML as multipart/alternative. Raises :class:`ValueError` for text that is not
    Unicode (a lone surrogate)."""
    if html_body is None:
        return b"MIME-Version: 1.0\r\n" + _text_part(body, b"plain")
    # Base64 lines never hold "_", so no body can contain this boundary.
    boundary = b"=_" + secrets.token_hex(12).encode("ascii")
    return b"".join(
        (
            b"MIME-Version: 1.0\r\n",
            b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n',
            b"--" + boundary + b"\r\n",
            _text_part(body, b"plain"),
            b"\r\n--" + boundary + b"\r\n",
            _text_part(html_body, b"html"),
            b"\r\n--" + boundary + b"--\r\n",
        )
    )


__all__ = ["LARGE", "large_body"]
