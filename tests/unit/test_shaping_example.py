"""The documented example shaping file in the repository parses, and says what the
README says it does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mailsched.domain import shaping

EXAMPLE = Path(__file__).parents[2] / "deploy" / "shaping.example.toml"


def test_the_example_file_parses() -> None:
    found = shaping.parse(EXAMPLE.read_text(encoding="utf-8"), "news.example.com")

    assert [g.name for g in found.groups] == ["google", "microsoft", "yahoo", "news-warmup"]
    google = found.group("google")
    assert google is not None
    assert [g.name for g in found.groups_for("someone@GMAIL.com")] == ["google", "news-warmup"]
    rule = google.rule_for("421 4.7.0 Our system has detected an unusual rate of mail")
    assert rule is not None and rule.action == "slow" and rule.factor == 0.5
    warmup = found.group("news-warmup")
    assert warmup is not None and warmup.warmup is not None
    assert warmup.warmup.cap(datetime(2026, 12, 3, 12, tzinfo=UTC)) == 1125
