"""The new-campaign form's recipients: pasted one per line, or a CSV file (pure).

A text whose first line is a CSV header naming an ``email`` column (or is just
``email``) is read as CSV: ``email``, ``name`` and ``timezone`` fill those fields
of a recipient object and every other column becomes one of its template
``vars``; an empty cell is left out. Any other text holds one address per line.
Blank lines are skipped either way, and each recipient remembers its line, so
that an error about ``recipients.N`` can name the line the person sees.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any

#: Columns that are fields of a recipient rather than template variables.
_FIELDS = ("email", "name", "timezone")
_DELIMITERS = ",;\t"


@dataclass(frozen=True, slots=True)
class Recipients:
    """The request's ``recipients`` and, for each, its line in the text (from 1)."""

    items: list[str | dict[str, Any]]
    lines: list[int]


class BadList(ValueError):
    """The text cannot be read as recipients; the message names the line."""


def read_recipients(text: str, most: int) -> Recipients:
    """The recipients in ``text``; :class:`BadList` beyond ``most`` of them (counted
    before anything is validated, as the API counts them) or for a malformed CSV."""
    lines = text.removeprefix("\ufeff").splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return Recipients([], [])
    header = _header(lines[first])
    if header is None:
        return _one_per_line(lines, most)
    return _from_csv(lines, first, header, most)


def _header(line: str) -> tuple[str, list[str]] | None:
    """The delimiter and column names, when ``line`` is a CSV header with an email column."""
    line = line.rstrip("\r\n")
    if line.strip().lower() == "email":  # a file of one column
        return ",", ["email"]
    for delimiter in _DELIMITERS:
        if delimiter not in line:
            continue
        names = [n.strip().lower() for n in next(csv.reader([line], delimiter=delimiter))]
        if "email" in names:
            return delimiter, names
    return None


def _one_per_line(lines: list[str], most: int) -> Recipients:
    items: list[str | dict[str, Any]] = []
    numbers: list[int] = []
    for number, line in enumerate(lines, start=1):
        address = line.strip()
        if not address:
            continue
        if len(items) == most:
            raise BadList(f"at most {most} recipients per campaign")
        items.append(address)
        numbers.append(number)
    return Recipients(items, numbers)


def _from_csv(lines: list[str], first: int, header: tuple[str, list[str]], most: int) -> Recipients:
    delimiter, names = header
    repeated = sorted({n for n in names if names.count(n) > 1 and n})
    if repeated:
        raise BadList(f"line {first + 1}: the column {repeated[0]!r} appears twice")
    items: list[str | dict[str, Any]] = []
    numbers: list[int] = []
    reader = csv.reader(lines[first + 1 :], delimiter=delimiter, strict=True)
    try:
        for cells in reader:
            # The reader counts physical lines, so a quoted cell over two lines still
            # names the line it ends on.
            number = first + 1 + reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(names):
                raise BadList(f"line {number}: {len(cells)} cells, but {len(names)} columns")
            if len(items) == most:
                raise BadList(f"at most {most} recipients per campaign")
            items.append(_recipient(dict(zip(names, cells, strict=False))))
            numbers.append(number)
    except csv.Error as exc:
        raise BadList(f"line {first + 1 + reader.line_num}: {exc}") from None
    return Recipients(items, numbers)


def _recipient(row: dict[str, str]) -> str | dict[str, Any]:
    values = {k: v.strip() for k, v in row.items() if k and v.strip()}
    variables = {k: v for k, v in values.items() if k not in _FIELDS}
    fields: dict[str, Any] = {k: values[k] for k in _FIELDS if k in values}
    if set(fields) <= {"email"} and not variables:
        return values.get("email", "")
    if variables:
        fields["vars"] = variables
    fields.setdefault("email", "")
    return fields
