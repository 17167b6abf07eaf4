"""A campaign's sends over time against its plan and its limits, as an inline SVG.

Pure: the times come in as arguments, an SVG string comes out. The page that
embeds it forbids inline styles (``style-src 'self'``), so the drawing uses only
presentation attributes and the class names ``sent``, ``planned``, ``limit`` and
``now``, never a ``style`` attribute or element.

The rolling window is half-open, as in :mod:`mailsched.domain.plan`: a send
exactly ``window`` after another is not in the same window.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape

_HOUR = timedelta(hours=1)
_WINDOW_NAMES = {
    timedelta(minutes=1): ("minute", "min"),
    _HOUR: ("hour", "h"),
    timedelta(days=1): ("day", "day"),
}
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 56, 16, 32, 24
_SENT_COLOUR, _PLANNED_COLOUR, _LIMIT_COLOUR, _INK = "#1f6feb", "#6e7781", "#cf222e", "#24292f"


def busiest_window(sent: Sequence[datetime], window: timedelta = _HOUR) -> int:
    """The most sends in any rolling, half-open ``window`` ``[t, t + window)``."""
    if window <= timedelta(0):
        raise ValueError("window must be positive")
    times = sorted(sent)
    best = first = 0
    for last, t in enumerate(times):
        while t - times[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


def smallest_gap(sent: Sequence[datetime]) -> timedelta | None:
    """The shortest time between two consecutive sends; ``None`` below two sends."""
    times = sorted(sent)
    return min((b - a for a, b in itertools.pairwise(times)), default=None)


def sends_chart(
    planned: Sequence[datetime],
    sent: Sequence[datetime],
    hourly_limit: int,
    delay_seconds: int,
    window: timedelta = _HOUR,
    now: datetime | None = None,
    width: int = 720,
    height: int = 240,
    title: str = "Sends over time",
    chart_id: str = "sends-chart",
) -> str:
    """Cumulative sends (``planned`` and real ``sent`` times, any order) as an SVG string.

    Draws the cumulative sent count as a step line, the cumulative plan as a
    dashed step line, and from the first send the most the rules allow:
    ``hourly_limit`` per ``window`` and one send per ``delay_seconds``. Its
    slope is the lower of the two rates; it starts at ``hourly_limit`` sends
    (1 when there is a delay), since a window may be spent at once. A ``now``
    marker is drawn when ``now`` is given. Lines keep at most two points per
    pixel column, so 100,000 sends make a drawing of tens of kilobytes.

    ``chart_id`` prefixes the ids that ``aria-labelledby`` points at, for a page
    with more than one chart. Times are shown in UTC; naive times count as UTC.
    """
    if hourly_limit < 1 or delay_seconds < 0 or window <= timedelta(0):
        raise ValueError("the limit must be at least 1, the delay >= 0, the window > 0")
    if width < _MARGIN_LEFT + _MARGIN_RIGHT + 100 or height < _MARGIN_TOP + _MARGIN_BOTTOM + 40:
        raise ValueError("the chart is too small to draw")
    sent_sorted, planned_sorted = sorted(sent), sorted(planned)
    frame = _Frame.around(planned_sorted, sent_sorted, now, width, height)
    ident = escape(chart_id, quote=True)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}"'
        ' font-family="sans-serif"'
        f' viewBox="0 0 {width} {height}" aria-labelledby="{ident}-title {ident}-desc">',
        f'<title id="{ident}-title">{escape(title)}</title>',
        f'<desc id="{ident}-desc">'
        f"{escape(describe(len(planned), sent_sorted, hourly_limit, delay_seconds, window))}"
        "</desc>",
        f'<text x="{_MARGIN_LEFT}" y="16" font-size="13" fill="{_INK}">{escape(title)}</text>',
    ]
    if frame is None:
        parts.append(
            f'<text x="{width / 2:g}" y="{height / 2:g}" font-size="13" fill="{_INK}"'
            ' text-anchor="middle">nothing planned</text>'
        )
    else:
        parts += frame.axes()
        parts += _legend(width, hourly_limit, delay_seconds, window)
        if sent_sorted:  # under the plan: a plan that runs at the limit shows on top of it
            limit = frame.limit_line(sent_sorted[0], hourly_limit, delay_seconds, window)
            parts.append(_polyline("limit", _LIMIT_COLOUR, limit))
        parts.append(_polyline("planned", _PLANNED_COLOUR, frame.steps(planned_sorted, frame.end)))
        if sent_sorted:
            until = sent_sorted[-1] if now is None else now
            parts.append(_polyline("sent", _SENT_COLOUR, frame.steps(sent_sorted, until)))
        if now is not None:
            parts += frame.now_marker(now)
    parts.append("</svg>")
    return "\n".join(parts)


def describe(
    planned: int, sent: Sequence[datetime], hourly_limit: int, delay_seconds: int, window: timedelta
) -> str:
    """The chart in words, e.g. "312 of 1000 sent; the busiest hour had 100 sends (limit 100);
    the smallest gap was 36.0 s (delay 36 s)."."""
    if not planned and not sent:
        return "Nothing planned."
    words = f"{len(sent)} of {planned} sent"
    if not sent:
        return f"{words}; nothing sent yet."
    busiest = busiest_window(sent, window)
    name = _WINDOW_NAMES.get(window, (f"{window.total_seconds():g}-second window", ""))[0]
    sends = "send" if busiest == 1 else "sends"
    words += f"; the busiest {name} had {busiest} {sends} (limit {hourly_limit})"
    gap = smallest_gap(sent)
    if gap is not None:
        words += f"; the smallest gap was {gap.total_seconds():.1f} s (delay {delay_seconds} s)"
    return f"{words}."


@dataclass(frozen=True, slots=True)
class _Frame:
    """Where a time and a count land: the plot area and the ranges it shows (built from
    sorted times)."""

    start: datetime
    end: datetime
    top: int  # the count at the top of the plot
    width: int
    height: int

    @classmethod
    def around(
        cls,
        planned: Sequence[datetime],
        sent: Sequence[datetime],
        now: datetime | None,
        width: int,
        height: int,
    ) -> _Frame | None:
        ends = [*planned[:1], *planned[-1:], *sent[:1], *sent[-1:]]
        if not ends:
            return None
        if now is not None:
            ends.append(now)
        start, end = min(ends), max(ends)
        if end == start:  # one moment: give it a minute of room so the axis reads
            end = start + timedelta(minutes=1)
        return cls(start, end, max(len(planned), len(sent)), width, height)

    @property
    def plot_width(self) -> int:
        return self.width - _MARGIN_LEFT - _MARGIN_RIGHT

    @property
    def plot_bottom(self) -> int:
        return self.height - _MARGIN_BOTTOM

    def x(self, t: datetime) -> float:
        return _MARGIN_LEFT + (t - self.start) / (self.end - self.start) * self.plot_width

    def y(self, count: float) -> float:
        plot_height = self.plot_bottom - _MARGIN_TOP
        return self.plot_bottom - min(count, self.top) / self.top * plot_height

    def steps(self, times: Sequence[datetime], until: datetime) -> list[tuple[float, float]]:
        """The cumulative count of sorted ``times`` as a step line, flat up to ``until``.

        One step per pixel column at most, found by bisection: 100,000 times cost
        about 650 searches instead of 100,000 coordinates.
        """
        points: list[tuple[float, float]] = [(_MARGIN_LEFT, self.y(0))]
        span, columns = self.end - self.start, self.plot_width
        before = 0
        for column in range(columns + 1):
            # Column ``c`` holds the times that round to it: up to half a column past it.
            upto = bisect_left(times, self.start + span * ((column + 0.5) / columns))
            if upto > before:
                x = _MARGIN_LEFT + column
                points += [(x, self.y(before)), (x, self.y(upto))]
                before = upto
        points.append((max(round(self.x(until)), points[-1][0]), self.y(before)))
        return points

    def limit_line(
        self, first: datetime, limit: int, delay_seconds: int, window: timedelta
    ) -> list[tuple[float, float]]:
        """The most sends the rules allow by each moment after ``first``: no more than
        ``limit * (1 + elapsed / window)`` (the windows since ``first``, the current
        one included) nor, with a delay, ``1 + elapsed / delay``."""

        def allowed(t: datetime) -> float:
            elapsed = (t - first).total_seconds()
            most = limit * (1 + elapsed / window.total_seconds())
            return most if delay_seconds == 0 else min(most, 1 + elapsed / delay_seconds)

        moments = [first, self.end]
        if delay_seconds and limit / window.total_seconds() < 1 / delay_seconds:
            # The delay's line starts lower but climbs faster: it binds until they cross.
            rate_gap = 1 / delay_seconds - limit / window.total_seconds()
            crossing = first + timedelta(seconds=(limit - 1) / rate_gap)
            if crossing < self.end:
                moments.insert(1, crossing)
        points = [(t, allowed(t)) for t in moments]
        if points[0][1] >= self.top:  # the rules allow the whole chart at once
            return [(self.x(t), self.y(self.top)) for t in (first, self.end)]
        return [(self.x(t), self.y(c)) for t, c in _clip(points, self.top)]

    def axes(self) -> list[str]:
        left, right, bottom = _MARGIN_LEFT, self.width - _MARGIN_RIGHT, self.plot_bottom
        label = f'font-size="11" fill="{_INK}"'
        return [
            f'<path class="axis" d="M{left},{_MARGIN_TOP}V{bottom}H{right}" fill="none"'
            f' stroke="{_INK}" stroke-width="1"/>',
            f'<text x="{left - 4}" y="{bottom}" {label} text-anchor="end">0</text>',
            f'<text x="{left - 4}" y="{_MARGIN_TOP + 8}" {label} text-anchor="end">'
            f"{self.top}</text>",
            f'<text x="{left}" y="{self.height - 6}" {label}>{_utc(self.start)}</text>',
            f'<text x="{right}" y="{self.height - 6}" {label} text-anchor="end">'
            f"{_utc(self.end)}</text>",
        ]

    def now_marker(self, now: datetime) -> list[str]:
        x = _num(self.x(now))
        return [
            f'<line class="now" x1="{x}" y1="{_MARGIN_TOP}" x2="{x}" y2="{self.plot_bottom}"'
            f' stroke="{_INK}" stroke-width="1" stroke-dasharray="2 2"/>',
            f'<text x="{x}" y="{_MARGIN_TOP - 2}" font-size="11" fill="{_INK}"'
            ' text-anchor="middle">now</text>',
        ]


def _clip(points: list[tuple[datetime, float]], top: int) -> list[tuple[datetime, float]]:
    """Cut a rising line where it leaves the plot's top."""
    kept = points[:1]
    for (t1, c1), (t2, c2) in itertools.pairwise(points):
        if c2 > top:
            if c1 < top:
                kept.append((t1 + (t2 - t1) * ((top - c1) / (c2 - c1)), top))
            break
        kept.append((t2, c2))
    return kept


def _legend(width: int, limit: int, delay_seconds: int, window: timedelta) -> list[str]:
    per = _WINDOW_NAMES.get(window, ("", f"{window.total_seconds():g} s"))[1]
    items = [
        ("sent", _SENT_COLOUR, "", "sent"),
        ("planned", _PLANNED_COLOUR, ' stroke-dasharray="6 4"', "planned"),
        ("limit", _LIMIT_COLOUR, "", f"limit: {limit}/{per}, delay {delay_seconds} s"),
    ]
    # About 6 px a character at font-size 11, so the legend ends at the right margin.
    x = width - _MARGIN_RIGHT - sum(30 + 6 * len(text) for *_, text in items)
    parts = []
    for cls, colour, dashes, text in items:
        parts.append(
            f'<line class="{cls}" x1="{x}" y1="12" x2="{x + 18}" y2="12" stroke="{colour}"'
            f' stroke-width="2"{dashes}/>'
            f'<text x="{x + 22}" y="16" font-size="11" fill="{_INK}">{escape(text)}</text>'
        )
        x += 30 + 6 * len(text)
    return parts


def _polyline(cls: str, colour: str, points: list[tuple[float, float]]) -> str:
    dashes = ' stroke-dasharray="6 4"' if cls == "planned" else ""
    coordinates = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
    return (
        f'<polyline class="{cls}" points="{coordinates}" fill="none" stroke="{colour}"'
        f' stroke-width="{1.5 if cls == "sent" else 1}"{dashes}/>'
    )


def _num(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _utc(t: datetime) -> str:
    return (t if t.tzinfo is None else t.astimezone(UTC)).strftime("%Y-%m-%d %H:%M")
