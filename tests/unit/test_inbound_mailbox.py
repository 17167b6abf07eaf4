"""Which of a message's reports decides for the delivery its return path names."""

from __future__ import annotations

import pytest

from mailsched.inbound.mailbox import most_severe
from mailsched.inbound.reports import Kind, Report


def report(kind: Kind, recipient: str) -> Report:
    return Report(kind, recipient, None, None, None, "dsn")


H1, H2 = report(Kind.HARD, "h1@x.example"), report(Kind.HARD, "h2@x.example")
S1, S2 = report(Kind.SOFT, "s1@x.example"), report(Kind.SOFT, "s2@x.example")
C1 = report(Kind.COMPLAINT, "c1@x.example")


@pytest.mark.parametrize(
    ("reports", "decides"),
    [
        ([], None),
        ([S1], S1),
        ([S1, S2], S1),
        ([S1, H1], H1),
        ([H1, H2], H1),
        ([S1, H2, H1], H2),
        ([H1, S1, C1], C1),
        ([S1, C1, H1, S2], C1),
    ],
)
def test_a_complaint_then_a_hard_bounce_then_a_soft_one_decides_the_first_of_its_kind(
    reports: list[Report], decides: Report | None
) -> None:
    assert most_severe(reports) is decides
