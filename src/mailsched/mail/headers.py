"""What text may go into a header: the one rule the API, the templates and the messages share.

Python's :mod:`email` package folds a header with :meth:`str.splitlines`, so every
line boundary that method knows (CR, LF, VT, FF, FS, GS, RS, NEL, U+2028, U+2029)
makes ``as_bytes()`` raise "Header values may not contain linefeed or carriage
return characters" at send time. NUL is not refused there: it would pass into the
header raw, and many servers cut the line at it. Both are refused when a campaign
is created, so that no delivery can fail on them later.
"""

from __future__ import annotations

import re

#: NUL, and exactly the line boundaries of :meth:`str.splitlines`.
HEADER_BREAKS = re.compile("[\x00\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")

_NAMED = {
    "\x00": "NUL",
    "\n": "LF",
    "\r": "CR",
    "\x0b": "VT",
    "\x0c": "FF",
    "\x1c": "FS",
    "\x1d": "GS",
    "\x1e": "RS",
    "\x85": "NEL",
    "\u2028": "U+2028",
    "\u2029": "U+2029",
}


def header_break(value: str) -> str | None:
    """The name of the first character of ``value`` a header may not hold, or None."""
    found = HEADER_BREAKS.search(value)
    return None if found is None else _NAMED[found.group()]


def header_text(value: str) -> str:
    """``value`` if it may go into a header; :class:`ValueError` naming the character if not."""
    bad = header_break(value)
    if bad is not None:
        raise ValueError(f"must not contain {bad} (no line breaks or NUL in a header)")
    return value


__all__ = ["HEADER_BREAKS", "header_break", "header_text"]
