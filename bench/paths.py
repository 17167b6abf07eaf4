"""Where the bench writes, and how it keeps this machine's paths out of what it writes."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "benchmarks.md"

_PREFIXES = sorted(
    {
        (str(REPO), "."),
        (str(Path(sys.prefix)), "<venv>"),
        (str(Path(sys.base_prefix)), "<python>"),
        (tempfile.gettempdir(), "<tmp>"),
        (str(Path.home()), "~"),
    },
    key=lambda pair: -len(pair[0]),
)
_SITE = re.compile(r"[^\s;()'\"]*?/(?:site|dist)-packages/")
_STDLIB = re.compile(r"[^\s;()'\"]*?/lib/python3\.\d+/")


def scrub(text: str) -> str:
    """Replace this machine's directories with placeholders, so results can be shared."""
    text = _SITE.sub("", text)
    text = _STDLIB.sub("<stdlib>/", text)
    for prefix, placeholder in _PREFIXES:
        if prefix and prefix != os.sep:
            text = text.replace(prefix, placeholder)
    return text
