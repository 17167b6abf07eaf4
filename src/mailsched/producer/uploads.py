"""Recipients uploaded to a draft, as CSV or NDJSON: read a line at a time, checked a
row at a time, never held whole.

CSV (``text/csv``): a header row naming ``email`` and optionally ``name``,
``timezone`` and ``vars.<name>`` columns, then one recipient a row (RFC 4180:
fields may be quoted, and a quoted field may hold line breaks). NDJSON
(``application/x-ndjson``): one recipient a line, an address or an object
``{email, name?, vars?, timezone?}`` as in a create's body. Blank lines are skipped.

Line numbers are the upload's own, from 1 (a CSV's header), so a row that spans
lines is named by its first.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailsched.producer.addresses import normalize_address
from mailsched.producer.schemas import (
    Recipient,
    recipient_name,
    recipient_vars,
    recipient_zone,
)

CSV = "text/csv"
NDJSON = "application/x-ndjson"
FORMATS = (CSV, NDJSON)

#: The longest row (a CSV row may span lines): a body without line breaks is refused
#: at this size rather than read into memory whole.
MAX_ROW_BYTES = 64 * 1024

_VAR_COLUMN = re.compile(r"vars\.([A-Za-z_][A-Za-z0-9_]{0,63})")
_COLUMNS = ("email", "name", "timezone")
_MAX_VAR_COLUMNS = 50

#: A draft's own checks of a good row (its templates, its calendar): raises :class:`BadField`.
RowCheck = Callable[[Recipient], None]


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a row was refused: its line, the column or key at fault, and what is wrong."""

    line: int
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class Upload:
    """An upload as the API received it: its format, its body as it streams in, and
    whether bad rows are left out (rather than refusing it all)."""

    content_type: str
    chunks: AsyncIterator[bytes]
    skip_invalid: bool = False


class RowsRefused(Exception):
    """The upload had bad rows and stored nothing: the first of them, and how many."""

    def __init__(self, problems: list[Problem], invalid: int) -> None:
        super().__init__(f"{invalid} bad rows")
        self.problems = problems
        self.invalid = invalid


class Unreadable(Exception):
    """The upload as a whole cannot be read (its header, or a row over the size)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"line {problem.line}: {problem.field}: {problem.message}")
        self.problem = problem


@dataclass(slots=True)
class Batch:
    """The rows of the lines one network chunk completed."""

    #: Good rows: their line, and the recipient.
    rows: list[tuple[int, Recipient]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class BadField(Exception):
    """One field of a row is wrong (raised by :func:`check` and a draft's own checks)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message


class Rows(Protocol):
    """A format's reader: whole lines in, checked rows out."""

    def feed(self, lines: list[tuple[int, bytes]]) -> Batch: ...

    def finish(self) -> Batch: ...


def reader(content_type: str, extra: RowCheck) -> Rows:
    """The reader of ``content_type`` (one of :data:`FORMATS`), checking each good row
    with ``extra`` too."""
    return CsvRows(extra) if content_type == CSV else NdjsonRows(extra)


async def batches(chunks: AsyncIterator[bytes], rows: Rows) -> AsyncIterator[Batch]:
    """The upload's rows, a batch for each chunk of the body that completes lines
    (checked in a thread: a chunk's rows can take milliseconds to render)."""
    rest = b""
    number = 0
    async for chunk in _gathered(chunks):
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        if len(rest) > MAX_ROW_BYTES:
            raise Unreadable(Problem(number + 1, "line", f"longer than {MAX_ROW_BYTES} bytes"))
        if parts:
            lines = list(enumerate(parts, start=number + 1))
            number += len(parts)
            yield await asyncio.to_thread(rows.feed, lines)
    tail = rows.feed([(number + 1, rest)]) if rest else Batch()
    end = rows.finish()
    yield Batch(tail.rows + end.rows, tail.problems + end.problems)


#: How much of the body is read before its lines are checked and stored: the network
#: hands it over in pieces of a few kilobytes, and each batch costs a round trip or two.
BATCH_BYTES = 256 * 1024


async def _gathered(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The body in pieces of at least :data:`BATCH_BYTES` (the last may be smaller)."""
    pending: list[bytes] = []
    size = 0
    async for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        if size >= BATCH_BYTES:
            yield b"".join(pending)
            pending.clear()
            size = 0
    if size:
        yield b"".join(pending)


async def ahead(items: AsyncIterator[Batch], depth: int = 2) -> AsyncGenerator[Batch, None]:
    """``items``, read up to ``depth`` ahead in a task of their own: the next batch is
    read and checked while the last one is being stored. An error reading comes out
    where the item would have."""
    # Not BaseException: a cancelled reader must stop, not wait for room in the queue.
    queue: asyncio.Queue[Batch | Exception | None] = asyncio.Queue(depth)

    async def read() -> None:
        try:
            async for item in items:
                await queue.put(item)
            await queue.put(None)
        except Exception as error:  # handed over: the reader's caller raises it
            await queue.put(error)

    task = asyncio.create_task(read())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        task.cancel()
        # The reader's own end (its cancellation) is not ours: a cancellation of this
        # generator's caller still comes out of the gather.
        await asyncio.gather(task, return_exceptions=True)


class Seen:
    """The addresses an upload gave so far, in a fixed :data:`SEEN_BYTES` (a Bloom
    filter): "certainly not" for a new one, so that only the few it cannot rule out
    are looked up among the stored rows, and memory does not grow with the upload.

    At 1,000,000 addresses it wrongly says "maybe" about once in 100,000; at
    10,000,000 (the default limit) for 4 % of them, which are then looked up. Four
    bits a key, not the seven that would make it rarer: the filter is Python, a
    microsecond or so a bit, and the lookups it still lets through are few.
    """

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits = bytearray(SEEN_BYTES)

    def add(self, key: str) -> bool:
        """Note ``key``; ``False`` if it was certainly not noted before."""
        bits = self._bits
        # Two indexes from one 64-bit hash, stepped (Kirsch-Mitzenmacher): as good as
        # independent hashes for a filter, at the cost of one.
        h = hash(key)
        at, step = h & _SEEN_MASK, (h >> 27) | 1
        before = True
        for _ in range(_SEEN_HASHES):
            byte, bit = at >> 3, 1 << (at & 7)
            if not bits[byte] & bit:
                before = False
                bits[byte] |= bit
            at = (at + step) & _SEEN_MASK
        return before


#: The memory :class:`Seen` takes: 8 MiB, 2**26 bits.
SEEN_BYTES = 1 << 23
_SEEN_MASK = SEEN_BYTES * 8 - 1
_SEEN_HASHES = 4


def _text(line: bytes) -> str:
    try:
        return line.removesuffix(b"\r").decode()
    except UnicodeDecodeError as error:
        raise BadField("line", f"not UTF-8 (byte {error.start + 1})") from None


def check(
    email: object, name: object = None, variables: object = None, zone: object = None
) -> Recipient:
    """One recipient, each field checked as a create's body is; :class:`BadField` names the
    field at fault."""
    if not isinstance(email, str) or not email:
        raise BadField("email", "an address is required")
    try:
        address = normalize_address(email)
    except ValueError as error:
        raise BadField("email", str(error)) from None
    try:
        return Recipient(
            address, recipient_name(name), recipient_vars(variables), recipient_zone(zone)
        )
    except ValueError as error:
        where, _, message = str(error).partition(": ")
        raise BadField(where, message) from None


class NdjsonRows:
    """One JSON value a line: an address, or a recipient object."""

    def __init__(self, extra: RowCheck) -> None:
        self._extra = extra

    def feed(self, lines: list[tuple[int, bytes]]) -> Batch:
        batch = Batch()
        for number, line in lines:
            try:
                text = _text(line)
                if number == 1:
                    text = text.removeprefix("\ufeff")
                if not text.strip():
                    continue
                recipient = self._row(text)
                self._extra(recipient)
                batch.rows.append((number, recipient))
            except BadField as bad:
                batch.problems.append(Problem(number, bad.field, bad.message))
        return batch

    def finish(self) -> Batch:
        return Batch()

    @staticmethod
    def _row(text: str) -> Recipient:
        try:
            value: Any = json.loads(text)
        except ValueError as error:
            raise BadField("line", f"not JSON: {error}") from None
        if isinstance(value, str):
            return check(value)
        if not isinstance(value, dict):
            raise BadField(
                "line", "must be an address, or an object {email, name?, vars?, timezone?}"
            )
        unknown = sorted(set(value) - {"email", "name", "vars", "timezone"})
        if unknown:
            raise BadField(unknown[0], "unknown key; allowed: email, name, vars, timezone")
        return check(
            value.get("email"), value.get("name"), value.get("vars"), value.get("timezone")
        )


class CsvRows:
    """A header row, then a recipient a row."""

    def __init__(self, extra: RowCheck) -> None:
        self._extra = extra
        self._columns: list[str] | None = None
        #: A row whose quoted field runs on to the next lines: its first line, and its lines.
        self._open: tuple[int, list[bytes]] | None = None
        self._quotes = 0

    def feed(self, lines: list[tuple[int, bytes]]) -> Batch:
        batch = Batch()
        records: list[tuple[int, str]] = []
        for number, line in lines:
            if self._open is None:
                self._open, self._quotes = (number, []), 0
            first, parts = self._open
            parts.append(line.removesuffix(b"\r"))
            self._quotes += line.count(b'"')
            if self._quotes % 2:
                if sum(map(len, parts)) > MAX_ROW_BYTES:
                    raise Unreadable(Problem(first, "line", "a quoted field is never closed"))
                continue  # a quoted field goes on
            self._open = None
            try:
                records.append((first, _text(b"\n".join(parts))))
            except BadField as bad:
                self._refuse_header(first, bad)
                batch.problems.append(Problem(first, bad.field, bad.message))
        self._read(records, batch)
        return batch

    def finish(self) -> Batch:
        if self._open is not None:
            raise Unreadable(Problem(self._open[0], "line", "a quoted field is never closed"))
        if self._columns is None:
            raise Unreadable(Problem(1, "header", "no header row: it must name an email column"))
        return Batch()

    def _read(self, records: list[tuple[int, str]], batch: Batch) -> None:
        parsed: Iterator[list[str]] = csv.reader(text for _, text in records)
        for (number, _), cells in zip(records, parsed, strict=True):
            if not any(cells):
                continue
            if self._columns is None:
                self._columns = _header(number, cells)
                continue
            try:
                recipient = self._row(cells)
                self._extra(recipient)
                batch.rows.append((number, recipient))
            except BadField as bad:
                batch.problems.append(Problem(number, bad.field, bad.message))

    def _row(self, cells: list[str]) -> Recipient:
        columns = self._columns
        assert columns is not None
        if len(cells) != len(columns):
            raise BadField("line", f"{len(cells)} values; the header names {len(columns)} columns")
        values: dict[str, str] = {}
        variables: dict[str, str] = {}
        for column, cell in zip(columns, cells, strict=True):
            if not cell:
                continue  # an empty cell is an absent value
            if column.startswith("vars."):
                variables[column[5:]] = cell
            else:
                values[column] = cell
        return check(
            values.get("email"), values.get("name"), variables or None, values.get("timezone")
        )

    def _refuse_header(self, number: int, bad: BadField) -> None:
        if self._columns is None:
            raise Unreadable(Problem(number, "header", bad.message))


def _header(number: int, cells: Iterable[str]) -> list[str]:
    columns = [c.strip().removeprefix("\ufeff") for c in cells]
    for column in columns:
        if column not in _COLUMNS and not _VAR_COLUMN.fullmatch(column):
            message = f"unknown column {column!r}; allowed: email, name, timezone, vars.<name>"
            raise Unreadable(Problem(number, "header", message))
    repeated = sorted(c for c, n in Counter(columns).items() if n > 1)
    if repeated:
        raise Unreadable(Problem(number, "header", f"column {repeated[0]!r} named twice"))
    if "email" not in columns:
        raise Unreadable(Problem(number, "header", "no email column"))
    if sum(c.startswith("vars.") for c in columns) > _MAX_VAR_COLUMNS:
        message = f"at most {_MAX_VAR_COLUMNS} vars.<name> columns"
        raise Unreadable(Problem(number, "header", message))
    return columns
