"""The sends chart: the two figures it prints, and an SVG a strict page can embed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsched.ui.chart import busiest_window, describe, sends_chart, smallest_gap

T0 = datetime(2026, 1, 25, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SVG = "{http://www.w3.org/2000/svg}"


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def at(*seconds: float) -> list[datetime]:
    return [T0 + s(x) for x in seconds]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def polyline(root: ET.Element, cls: str) -> list[tuple[float, float]]:
    (line,) = [e for e in root.iter(f"{SVG}polyline") if e.get("class") == cls]
    return [(float(x), float(y)) for x, y in (p.split(",") for p in line.attrib["points"].split())]


def flat(points: list[tuple[float, float]]) -> list[float]:
    return [c for point in points for c in point]


def classes(root: ET.Element, tag: str) -> list[str | None]:
    return [e.get("class") for e in root.iter(f"{SVG}{tag}")]


@pytest.mark.parametrize(
    ("seconds", "window", "expected"),
    [
        ((), 3600, 0),
        ((0,), 3600, 1),
        ((0, 0, 0), 3600, 3),
        # Half-open [t, t + window): a send exactly a window later starts a new one.
        ((0, 3600), 3600, 1),
        ((0, 3599.999999), 3600, 2),
        ((0, 1800, 3600), 3600, 2),
        ((3600, 0, 1800), 3600, 2),  # any order
        ((0, 10, 20, 30), 10, 1),
        ((0, 5, 10, 15), 10, 2),
        ((0, 1, 2, 100, 101, 102, 103), 10, 4),  # the busiest window is not the first
        ((0, 1, 2, 3, 100), 3, 3),
    ],
)
def test_busiest_window_table(seconds: tuple[float, ...], window: float, expected: int) -> None:
    assert busiest_window(at(*seconds), s(window)) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        ((), None),
        ((0,), None),
        ((0, 0), 0),
        ((10, 0, 4), 4),
        ((0, 36, 72, 107.5), 35.5),
        ((0, 0.000001), 0.000001),
    ],
)
def test_smallest_gap_table(seconds: tuple[float, ...], expected: float | None) -> None:
    gap = smallest_gap(at(*seconds))
    assert gap == (None if expected is None else s(expected))


# Small whole seconds, so sends often fall exactly a window apart.
offsets = st.lists(st.integers(min_value=0, max_value=300), max_size=60)


@given(offsets, st.integers(min_value=1, max_value=100))
def test_busiest_window_matches_brute_force(seconds: list[int], window: int) -> None:
    times = at(*seconds)
    brute = max(
        (sum(1 for u in times if t <= u < t + s(window)) for t in times),
        default=0,
    )
    assert busiest_window(times, s(window)) == brute


@given(offsets)
def test_smallest_gap_matches_brute_force(seconds: list[int]) -> None:
    times = at(*seconds)
    pairs = [abs(a - b) for i, a in enumerate(times) for b in times[i + 1 :]]
    assert smallest_gap(times) == min(pairs, default=None)


def test_busiest_window_refuses_an_empty_window() -> None:
    with pytest.raises(ValueError, match="window"):
        busiest_window(at(0), timedelta(0))


PLANNED = at(*(36 * i for i in range(1000)))
SENT = at(*(36 * i + 0.5 for i in range(312)))

CASES = {
    "running": (PLANNED, SENT, T0 + s(36 * 312)),
    "nothing planned": ([], [], None),
    "nothing sent": (PLANNED, [], T0 - HOUR),
    "one send": (at(0), at(0), None),
    "identical times": (at(5, 5, 5), at(5, 5), T0 + s(5)),
    "sent without a plan": ([], at(0, 1), None),
    "done": (PLANNED, PLANNED, T0 + 2 * HOUR),
}


@pytest.mark.parametrize("case", CASES)
def test_the_svg_suits_a_strict_page(case: str) -> None:
    planned, sent, now = CASES[case]
    svg = sends_chart(planned, sent, 100, 36, now=now)
    root = parse(svg)
    assert root.tag == f"{SVG}svg"
    assert "style=" not in svg
    assert not [e for e in root.iter() if e.tag in (f"{SVG}style", f"{SVG}script")]
    assert root.get("role") == "img"
    title_id, desc_id = root.attrib["aria-labelledby"].split()
    assert root.find(f"{SVG}title[@id='{title_id}']") is not None
    assert root.find(f"{SVG}desc[@id='{desc_id}']") is not None


def test_a_title_is_escaped() -> None:
    title = "<script>alert(1)</script> & \"q\" 'a'"
    svg = sends_chart(PLANNED, SENT, 100, 36, title=title, chart_id='x" onload="alert(1)')
    root = parse(svg)
    assert "<script>" not in svg
    assert not list(root.iter(f"{SVG}script"))
    assert root.findtext(f"{SVG}title") == title
    assert title in [e.text for e in root.iter(f"{SVG}text")]
    assert root.get("onload") is None


def test_the_description_says_the_figures() -> None:
    root = parse(sends_chart(PLANNED, SENT, 100, 36, now=T0 + s(36 * 312)))
    assert root.findtext(f"{SVG}desc") == (
        "312 of 1000 sent; the busiest hour had 100 sends (limit 100);"
        " the smallest gap was 36.0 s (delay 36 s)."
    )


@pytest.mark.parametrize(
    ("planned", "sent", "window", "expected"),
    [
        (0, (), HOUR, "Nothing planned."),
        (3, (), HOUR, "0 of 3 sent; nothing sent yet."),
        (3, (0,), HOUR, "1 of 3 sent; the busiest hour had 1 send (limit 10)."),
        (
            3,
            (0, 30, 59),
            s(60),
            "3 of 3 sent; the busiest minute had 3 sends (limit 10);"
            " the smallest gap was 29.0 s (delay 5 s).",
        ),
        (
            2,
            (0, 30),
            s(600),
            "2 of 2 sent; the busiest 600-second window had 2 sends (limit 10);"
            " the smallest gap was 30.0 s (delay 5 s).",
        ),
    ],
)
def test_describe_table(
    planned: int, sent: tuple[float, ...], window: timedelta, expected: str
) -> None:
    assert describe(planned, at(*sent), 10, 5, window) == expected


def test_the_sent_line_ends_at_the_sent_count_and_now() -> None:
    now = T0 + s(36 * 400)
    root = parse(sends_chart(PLANNED, SENT, 100, 36, now=now, width=720, height=240))
    # Plot from y=32 (1000 sends) down to y=216 (none); x from 56 to 704.
    last_x, last_y = polyline(root, "sent")[-1]
    assert last_y == pytest.approx(216 - 312 / 1000 * 184, abs=0.05)
    (marker,) = [e for e in root.iter(f"{SVG}line") if e.get("class") == "now"]
    assert last_x == pytest.approx(float(marker.attrib["x1"]), abs=0.5)
    assert polyline(root, "planned")[-1] == (704, 32)


def test_the_planned_line_is_dashed_and_the_legend_names_the_rules() -> None:
    root = parse(sends_chart(PLANNED, SENT, 100, 36))
    (planned,) = [e for e in root.iter(f"{SVG}polyline") if e.get("class") == "planned"]
    assert planned.get("stroke-dasharray")
    texts = [e.text for e in root.iter(f"{SVG}text")]
    assert {"sent", "planned", "limit: 100/h, delay 36 s"} <= set(texts)
    assert {"0", "1000", "2026-01-25 12:00", "2026-01-25 21:59"} <= set(texts)


def test_the_limit_line_climbs_at_the_slower_rule() -> None:
    # The plan follows the rules, so at 36 s a send both rules reach the top together.
    root = parse(sends_chart(PLANNED, SENT, 100, 36))
    assert flat(polyline(root, "limit")) == pytest.approx(
        [56, 216 - 1 / 1000 * 184, 704, 32], abs=0.05
    )
    # No delay: a whole window's sends may go at once, then 100 an hour.
    bursts = at(*(3600 * (i // 100) for i in range(1000)))
    root = parse(sends_chart(bursts, bursts[:300], 100, 0))
    assert flat(polyline(root, "limit")) == pytest.approx(
        [56, 216 - 100 / 1000 * 184, 704, 32], abs=0.05
    )
    # A limit above everything planned: the rules allow the whole chart at once.
    root = parse(sends_chart(at(0, 10), at(0), 100, 0))
    assert polyline(root, "limit") == [(56, 32), (704, 32)]


def test_the_limit_line_stops_at_the_top() -> None:
    # Two planned 90 s apart, a 1 s delay: the line reaches 2 sends 1 s after the first.
    root = parse(sends_chart(at(0, 90), at(0), 100, 1))
    assert flat(polyline(root, "limit")) == pytest.approx(
        [56, 216 - 92, 56 + 648 / 90, 32], abs=0.05
    )


def test_nothing_planned_says_so() -> None:
    root = parse(sends_chart([], [], 100, 36))
    assert "nothing planned" in [e.text for e in root.iter(f"{SVG}text")]
    assert classes(root, "polyline") == []


def test_nothing_sent_draws_the_plan_alone() -> None:
    root = parse(sends_chart(PLANNED, [], 100, 36))
    assert classes(root, "polyline") == ["planned"]


def test_the_now_marker_is_drawn_only_when_now_is_given() -> None:
    assert "now" in classes(parse(sends_chart(PLANNED, SENT, 100, 36, now=T0)), "line")
    assert "now" not in classes(parse(sends_chart(PLANNED, SENT, 100, 36)), "line")


def test_a_single_moment_still_has_a_time_axis() -> None:
    root = parse(sends_chart(at(0), at(0), 100, 36))
    texts = [e.text for e in root.iter(f"{SVG}text")]
    assert {"2026-01-25 12:00", "2026-01-25 12:01"} <= set(texts)
    assert polyline(root, "sent")[-1] == (56, 32)


def test_100k_sends_stay_small() -> None:
    """The lines keep two points per pixel column, whatever the number of sends (how fast
    that is belongs in bench/, not in a test's clock)."""
    planned = [T0 + s(36 * i) for i in range(100_000)]
    # Unordered, and a few microseconds off the plan, as real sends are.
    sent = [t + timedelta(microseconds=i % 997) for i, t in enumerate(reversed(planned[:70_000]))]
    svg = sends_chart(planned, sent, 100, 36, now=sent[0] + HOUR)
    assert len(svg.encode()) < 60_000
    root = parse(svg)
    assert len(polyline(root, "sent")) <= 2 * 648 + 2
    assert polyline(root, "sent")[-1][1] == pytest.approx(216 - 0.7 * 184, abs=0.05)


@pytest.mark.parametrize(
    ("limit", "delay", "window", "width", "height"),
    [
        (0, 36, HOUR, 720, 240),
        (1, -1, HOUR, 720, 240),
        (1, 0, s(0), 720, 240),
        (1, 0, HOUR, 50, 240),
        (1, 0, HOUR, 720, 50),
    ],
)
def test_bad_arguments_are_refused(
    limit: int, delay: int, window: timedelta, width: int, height: int
) -> None:
    with pytest.raises(ValueError, match=r"must|too small"):
        sends_chart(PLANNED, SENT, limit, delay, window, width=width, height=height)
