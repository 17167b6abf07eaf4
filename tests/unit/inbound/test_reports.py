"""Reading bounce and complaint reports: tables over real and hand-made samples, and fuzzing.

Corpus: the 117 sample messages of flufl.bounce 6.0.0's test data (tests/data/bounces/flufl,
see the NOTICE there), real bounces from about 20 MTAs and providers that GNU Mailman collected
since 2001. ``read_reports`` recognises 112 of the 117 (19 as standard DSNs, 93 through
flufl.bounce's detectors), the same addresses flufl.bounce's own tests expect. The 5 it does not
recognise hold no address to report: three bounces that name none (bounce_01, a JetMail bounce
naming a bare local part; dumbass_01, an InterScan VirusWall notice; simple_43, an NDR without
the recipient) and two messages that are no bounce (qmail_08, an auto-reply; groupwise_03, a
person's reply). Also 9 hand-made samples in tests/data/bounces/handmade.
``test_corpus_recognised_count`` keeps that number honest.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsched.errors import ReportTooLarge
from mailsched.inbound import reports
from mailsched.inbound.reports import MAX_REPORT_BYTES, Kind, Report, read_reports

DATA = Path(__file__).parents[2] / "data" / "bounces"
FLUFL = DATA / "flufl"
HANDMADE = DATA / "handmade"

# (file, format of the first report, [(kind, recipient, status), ...]), as read today and
# checked against flufl.bounce's own expectations for the same files.
CORPUS = [
    ("aol_01.txt", "flufl:aol", [("hard", "screenname@aol.com", None)]),
    ("bounce_01.txt", None, []),
    ("bounce_02.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("bounce_03.txt", "flufl:simplematch", [("hard", "userx@example.uk", None)]),
    ("caiwireless_01.txt", "flufl:caiwireless", [("hard", "userx@example.com", None)]),
    ("dsn_01.txt", "dsn", [("hard", "userx@example.com", "5.0.0")]),
    ("dsn_02.txt", "dsn", [("hard", "zzzzz@example.uk", "4.4.7")]),
    ("dsn_03.txt", "dsn", [("hard", "userx@example.be", None)]),
    ("dsn_04.txt", "dsn", [("hard", "userx@example.ch", "5.0.0")]),
    ("dsn_05.txt", "dsn", [("soft", "userx@example.cz", "4.4.1")]),
    ("dsn_06.txt", "dsn", [("soft", "userx@example.com", "4.4.0")]),
    ("dsn_07.txt", "dsn", [("soft", "userx@example.nz", "4.4.1")]),
    ("dsn_08.txt", "dsn", [("soft", "userx@example.de", "4.0.0")]),
    ("dsn_09.txt", "dsn", [("hard", "userx@example.com", "5.0.0")]),
    ("dsn_10.txt", "dsn", [("hard", "anne.person@dom.ain", "5.0.0")]),
    ("dsn_11.txt", "dsn", [("hard", "joem@example.com", "5.1.1")]),
    ("dsn_12.txt", "dsn", [("hard", "userx@example.jp", "5.1.1")]),
    ("dsn_13.txt", "dsn", [("hard", "userx@example.com", "5.1.1")]),
    ("dsn_14.txt", "dsn", [("hard", "userx@example.com.dk", "5.1.1")]),
    ("dsn_15.txt", "dsn", [("hard", "userx@example.com", "5.1.1")]),
    ("dsn_16.txt", "dsn", [("hard", "userx@example.com", "5.0.0")]),
    ("dsn_17.txt", "dsn", [("soft", "userx@example.fi", "4.3.0")]),
    ("dsn_18.txt", "dsn", [("hard", "email@replaced.net", "5.0.0")]),
    ("dumbass_01.txt", None, []),
    ("exim_01.txt", "flufl:exim", [("hard", "userx@its.example.nl", None)]),
    ("groupwise_01.txt", "flufl:groupwise", [("hard", "userx@example.edu", None)]),
    ("groupwise_02.txt", "flufl:exchange", [("hard", "userx@example.com", None)]),
    ("groupwise_03.txt", None, []),
    ("hotpop_01.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("llnl_01.txt", "flufl:llnl", [("hard", "user1@example.gov", None)]),
    ("microsoft_01.txt", "flufl:exchange", [("hard", "userx@example.com", None)]),
    ("microsoft_02.txt", "flufl:exchange", [("hard", "userx@example.com", None)]),
    ("microsoft_03.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("microsoft_04.txt", "flufl:microsoft", [("hard", "userx@example.com", None)]),
    (
        "netscape_01.txt",
        "flufl:netscape",
        [("hard", "aaaaa@corel.com", None), ("hard", "bbbbb@corel.com", None)],
    ),
    ("newmailru_01.txt", "flufl:simplematch", [("hard", "zzzzz@newmail.ru", None)]),
    ("postfix_01.txt", "flufl:postfix", [("hard", "xxxxx@local.ie", None)]),
    ("postfix_02.txt", "flufl:postfix", [("hard", "yyyyy@digicool.com", None)]),
    ("postfix_03.txt", "flufl:postfix", [("hard", "ttttt@ggggg.com", None)]),
    ("postfix_04.txt", "flufl:postfix", [("hard", "userx@mail1.example.com", None)]),
    ("postfix_05.txt", "flufl:postfix", [("hard", "userx@example.net", None)]),
    ("qmail_01.txt", "flufl:qmail", [("hard", "userx@example.de", None)]),
    ("qmail_02.txt", "flufl:qmail", [("hard", "userx@example.com", None)]),
    ("qmail_03.txt", "flufl:qmail", [("hard", "userx@example.jp", None)]),
    ("qmail_04.txt", "flufl:qmail", [("hard", "userx@example.au", None)]),
    ("qmail_05.txt", "flufl:qmail", [("hard", "userx@example.com", None)]),
    ("qmail_06.txt", "flufl:qmail", [("hard", "ntl@xxx.com", None)]),
    ("qmail_07.txt", "flufl:qmail", [("hard", "user@example.net", None)]),
    ("qmail_08.txt", None, []),
    (
        "sendmail_01.txt",
        "flufl:simplematch",
        [("hard", "zzzzz@nfg.nl", None), ("hard", "zzzzz@shaft.coal.nl", None)],
    ),
    ("simple_01.txt", "flufl:simplematch", [("hard", "bbbsss@example.com", None)]),
    ("simple_02.txt", "flufl:simplematch", [("hard", "userx@example.net", None)]),
    ("simple_03.txt", "flufl:simplewarning", [("soft", "userx@example.za", None)]),
    ("simple_04.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_05.txt", "flufl:simplematch", [("hard", "userx@example.net", None)]),
    ("simple_06.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_07.txt", "flufl:simplematch", [("hard", "userx@example.net", None)]),
    ("simple_08.txt", "flufl:simplematch", [("hard", "userx@example.de", None)]),
    ("simple_09.txt", "flufl:simplematch", [("hard", "userx@example.de", None)]),
    ("simple_10.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_11.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_12.txt", "flufl:smtp32", [("hard", "userx@example.ac.jp", None)]),
    ("simple_13.txt", "flufl:simplematch", [("hard", "userx@example.fr", None)]),
    (
        "simple_14.txt",
        "flufl:simplematch",
        [("hard", "userx@example.com", None), ("hard", "usery@example.com", None)],
    ),
    ("simple_15.txt", "flufl:simplematch", [("hard", "userx@example.be", None)]),
    ("simple_16.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_17.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_18.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_19.txt", "flufl:simplematch", [("hard", "userx@example.com.ar", None)]),
    ("simple_20.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_21.txt", "flufl:simplewarning", [("soft", "userx@example.com", None)]),
    ("simple_22.txt", "flufl:simplewarning", [("soft", "User@example.org", None)]),
    ("simple_23.txt", "flufl:simplematch", [("hard", "userx@example.it", None)]),
    ("simple_24.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_25.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_26.txt", "flufl:simplematch", [("hard", "userx@example.it", None)]),
    ("simple_27.txt", "flufl:simplematch", [("hard", "userx@example.net.py", None)]),
    ("simple_28.txt", "flufl:simplewarning", [("soft", "userx@example.com", None)]),
    ("simple_29.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_30.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_31.txt", "flufl:simplematch", [("hard", "userx@example.fr", None)]),
    ("simple_32.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_33.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_34.txt", "flufl:simplematch", [("hard", "roland@example.com", None)]),
    ("simple_35.txt", "flufl:simplewarning", [("soft", "calvin@example.com", None)]),
    ("simple_36.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_37.txt", "flufl:simplematch", [("hard", "user@example.edu", None)]),
    ("simple_38.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_39.txt", "flufl:simplematch", [("hard", "userx@example.ru", None)]),
    ("simple_40.txt", "flufl:simplewarning", [("soft", "user@example.com", None)]),
    ("simple_41.txt", "flufl:simplematch", [("hard", "userx@example.com", None)]),
    ("simple_42.txt", "dsn", [("hard", "david...@gmail.com", "5.0.0")]),
    ("simple_43.txt", None, []),
    ("simple_44.txt", "flufl:simplematch", [("hard", "user@example.com", None)]),
    ("simple_45.txt", "flufl:simplematch", [("hard", "subscriber@earthlink.net", None)]),
    (
        "sina_01.txt",
        "flufl:sina",
        [("hard", "userx@sina.com", None), ("hard", "usery@sina.com", None)],
    ),
    ("smtp32_01.txt", "flufl:smtp32", [("hard", "userx@example.ph", None)]),
    ("smtp32_02.txt", "flufl:smtp32", [("hard", "userx@example.com", None)]),
    ("smtp32_03.txt", "flufl:smtp32", [("hard", "userx@example.com", None)]),
    (
        "smtp32_04.txt",
        "flufl:smtp32",
        [
            ("hard", "after_another@example.net", None),
            ("hard", "one_bad_address@example.net", None),
        ],
    ),
    ("smtp32_05.txt", "flufl:smtp32", [("hard", "userx@example.com", None)]),
    ("smtp32_06.txt", "flufl:smtp32", [("hard", "Absolute_garbage_addr@example.net", None)]),
    ("smtp32_07.txt", "flufl:smtp32", [("hard", "userx@example.com", None)]),
    ("yahoo_01.txt", "flufl:yahoo", [("hard", "userx@example.com", None)]),
    ("yahoo_02.txt", "flufl:yahoo", [("hard", "userx@example.es", None)]),
    ("yahoo_03.txt", "flufl:yahoo", [("hard", "userx@example.com", None)]),
    (
        "yahoo_04.txt",
        "flufl:yahoo",
        [("hard", "userx@example.es", None), ("hard", "usery@example.uk", None)],
    ),
    (
        "yahoo_05.txt",
        "flufl:yahoo",
        [("hard", "userx@example.com", None), ("hard", "usery@example.com", None)],
    ),
    (
        "yahoo_06.txt",
        "flufl:yahoo",
        [
            ("hard", "usera@example.com", None),
            ("hard", "userx@example.com", None),
            ("hard", "usery@example.com", None),
            ("hard", "userz@example.com", None),
        ],
    ),
    (
        "yahoo_07.txt",
        "flufl:yahoo",
        [
            ("hard", "userw@example.com", None),
            ("hard", "userx@example.com", None),
            ("hard", "usery@example.com", None),
            ("hard", "userz@example.com", None),
        ],
    ),
    (
        "yahoo_08.txt",
        "flufl:yahoo",
        [
            ("hard", "usera@example.com", None),
            ("hard", "userb@example.com", None),
            ("hard", "userc@example.com", None),
            ("hard", "userd@example.com", None),
            ("hard", "usere@example.com", None),
            ("hard", "userf@example.com", None),
        ],
    ),
    (
        "yahoo_09.txt",
        "flufl:yahoo",
        [("hard", "userx@example.com", None), ("hard", "usery@example.com", None)],
    ),
    (
        "yahoo_10.txt",
        "flufl:yahoo",
        [
            ("hard", "userx@example.com", None),
            ("hard", "usery@example.com", None),
            ("hard", "userz@example.com", None),
        ],
    ),
    ("yahoo_11.txt", "flufl:yahoo", [("hard", "bad_user@aol.com", None)]),
    ("yahoo_12.txt", "flufl:simplematch", [("hard", "user@yahoo.com", None)]),
    ("yahoo_13.txt", "flufl:yahoo", [("hard", "bogus-address@example.net", None)]),
    (
        "yale_01.txt",
        "flufl:yale",
        [("hard", "userx@cs.yale.edu", None), ("hard", "userx@yale.edu", None)],
    ),
]


@pytest.mark.parametrize(("name", "fmt", "expected"), CORPUS, ids=[row[0] for row in CORPUS])
def test_corpus(name: str, fmt: str | None, expected: list[tuple[str, str, str | None]]) -> None:
    found = read_reports((FLUFL / name).read_bytes())

    assert [(r.kind.value, r.recipient, r.status) for r in found] == expected
    assert (found[0].format if found else None) == fmt


def test_corpus_covers_every_vendored_file() -> None:
    assert sorted(p.name for p in FLUFL.glob("*.txt")) == sorted(row[0] for row in CORPUS)


def test_corpus_recognised_count() -> None:
    recognised = [row for row in CORPUS if row[2]]

    assert (len(recognised), len(CORPUS)) == (112, 117)


def _one(name: str) -> Report:
    [report] = read_reports((HANDMADE / name).read_bytes())
    return report


HANDMADE_CASES = [
    (
        "postfix_dsn_5_1_1.eml",
        Report(
            Kind.HARD,
            "nobody@example.com",
            "5.1.1",
            "smtp; 550 5.1.1 <nobody@example.com>: Recipient address rejected: "
            "User unknown in local recipient table",
            "<campaign-7.delivery-123@sender.example>",
            "dsn",
            # The original's Return-Path, as the reporting server quoted it.
            "bounces+123@sender.example",
        ),
    ),
    (
        "soft_4_2_2_mailbox_full.eml",
        Report(
            Kind.SOFT,
            "full@example.net",
            "4.2.2",
            "smtp; 452 4.2.2 Mailbox full",
            "<campaign-7.delivery-124@sender.example>",
            "dsn",
        ),
    ),
    (
        "exim_bounce.eml",
        Report(Kind.HARD, "gone@example.org", None, None, None, "flufl:exim"),
    ),
    (
        "gmail_dsn.eml",
        Report(
            Kind.HARD,
            "no.such.user@gmail.com",
            "5.1.1",
            "smtp; 550-5.1.1 The email account that you tried to reach does not exist. "
            "Please try double-checking the recipient's email address for typos or "
            "unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser "
            "a1si123456wrb.12 - gsmtp",
            "<campaign-7.delivery-126@sender.example>",
            "dsn",
        ),
    ),
    (
        "m365_ndr.eml",
        Report(
            Kind.HARD,
            "Left.Company@contoso.com",
            "5.1.10",
            "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient "
            "Left.Company@contoso.com not found by SMTP address lookup",
            "<campaign-7.delivery-127@sender.example>",
            "dsn",
        ),
    ),
    (
        "yahoo_arf.eml",
        Report(
            Kind.COMPLAINT,
            "Annoyed@yahoo.com",
            None,
            "abuse",
            "<campaign-7.delivery-128@sender.example>",
            "arf",
            # The report's Original-Mail-From.
            "bounces+128@sender.example",
        ),
    ),
    (
        "aol_arf_redacted.eml",
        Report(
            Kind.COMPLAINT,
            "redacted@aol.com",
            None,
            "abuse",
            "<campaign-7.delivery-129@sender.example>",
            "arf",
        ),
    ),
    (
        "malformed_dsn.eml",
        Report(
            Kind.HARD, "Odd@odd.example", "5.2.1", "smtp; 550 5.2.1 mailbox disabled", None, "dsn"
        ),
    ),
]


@pytest.mark.parametrize(("name", "expected"), HANDMADE_CASES, ids=[c[0] for c in HANDMADE_CASES])
def test_handmade(name: str, expected: Report) -> None:
    assert _one(name) == expected


def test_several_recipients_one_report_per_failed_or_delayed() -> None:
    found = read_reports((HANDMADE / "several_recipients.eml").read_bytes())

    assert [(r.kind, r.recipient, r.status, r.diagnostic) for r in found] == [
        (Kind.HARD, "failed@example.com", "5.1.1", "smtp; 550 5.1.1 unknown user"),
        (Kind.SOFT, "later@example.com", "4.4.1", "smtp; 421 4.4.1 connection timed out"),
    ]
    assert {r.message_id for r in found} == {"<campaign-7.batch-9@sender.example>"}


def _dsn(*recipient_blocks: str) -> bytes:
    blocks = "\n".join(f"{block}\n" for block in recipient_blocks)
    return (
        "From: MAILER-DAEMON@mx.example\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nfailed\n"
        "--B\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.example\n\n{blocks}\n--B--\n"
    ).encode()


# Action decides when present (has the MTA given up?); the status class only without one.
ACTION_STATUS = [
    ("Action: failed\nStatus: 5.1.1", Kind.HARD, "5.1.1"),
    ("Action: failed\nStatus: 4.4.7", Kind.HARD, "4.4.7"),
    ("Action: delayed\nStatus: 4.2.2", Kind.SOFT, "4.2.2"),
    ("Action: delayed\nStatus: 5.0.0", Kind.SOFT, "5.0.0"),
    ("Action: delivered\nStatus: 2.0.0", None, None),
    ("Action: relayed\nStatus: 2.0.0", None, None),
    ("Action: expanded\nStatus: 2.0.0", None, None),
    ("Action: delivered\nStatus: 5.1.1", None, None),
    ("Status: 5.1.2", Kind.HARD, "5.1.2"),
    ("Status: 4.7.0 (greylisted)", Kind.SOFT, "4.7.0"),
    ("Status: 550", Kind.HARD, None),
    ("Status: 2.0.0", None, None),
    ("Action: failed", Kind.HARD, None),
    ("Action: failed\nDiagnostic-Code: smtp; 550 5.7.1 blocked", Kind.HARD, "5.7.1"),
    ("Action: FAILED (gave up)\nStatus: 5.01.001", Kind.HARD, "5.1.1"),
    ("Action: whatever\nStatus: 4.0.0", Kind.SOFT, "4.0.0"),
]


@pytest.mark.parametrize(("fields", "kind", "status"), ACTION_STATUS)
def test_action_and_status(fields: str, kind: Kind | None, status: str | None) -> None:
    found = read_reports(_dsn(f"Final-Recipient: rfc822; a@b.example\n{fields}"))

    assert [(r.kind, r.status) for r in found] == ([(kind, status)] if kind else [])


RECIPIENTS = [
    ("Final-Recipient: rfc822; User@Example.COM", "User@example.com"),
    ("Final-Recipient: RFC822;<user@example.com>", "user@example.com"),
    ("final-recipient: rfc822; user@example.com (comment)", "user@example.com"),
    (
        "Original-Recipient: rfc822; sent@example.com\nFinal-Recipient: rfc822; x@alias",
        "sent@example.com",
    ),
    (
        "Original-Recipient: rfc822; garbage\nFinal-Recipient: rfc822; f@example.com",
        "f@example.com",
    ),
    ("Final-Recipient: rfc822;", None),
    ("Final-Recipient: rfc822; not an address", None),
    ("Final-Recipient: utf-8; j\u00f6rg@b\u00fccher.example", "j\u00f6rg@b\u00fccher.example"),
]


@pytest.mark.parametrize(("fields", "recipient"), RECIPIENTS)
def test_recipient(fields: str, recipient: str | None) -> None:
    [report] = read_reports(_dsn(f"{fields}\nAction: failed\nStatus: 5.1.1"))

    assert report.recipient == recipient


def test_diagnostic_is_one_line_of_at_most_500_characters() -> None:
    long = "smtp; 550 5.1.1 " + "\n ".join(["word " * 30] * 10)
    [report] = read_reports(
        _dsn(f"Final-Recipient: rfc822; a@b.example\nAction: failed\nDiagnostic-Code: {long}")
    )

    assert report.diagnostic is not None
    assert len(report.diagnostic) == 500
    assert "\n" not in report.diagnostic
    assert report.diagnostic.startswith("smtp; 550 5.1.1 word word")


def _arf(feedback: str, original: str = "To: someone@example.com\n") -> bytes:
    return (
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\n\n'
        "--F\nContent-Type: text/plain\n\nreport\n"
        f"--F\nContent-Type: message/feedback-report\n\n{feedback}\n"
        f"--F\nContent-Type: text/rfc822-headers\n\n{original}Message-ID: <m@x>\n\n--F--\n"
    ).encode()


FEEDBACK_TYPES = [
    ("abuse", True),
    ("Fraud", True),
    ("virus", True),
    ("other", True),
    ("not-spam", False),
    ("auth-failure", False),
    ("x-unknown-type", False),
]


@pytest.mark.parametrize(("feedback_type", "complaint"), FEEDBACK_TYPES)
def test_feedback_types(feedback_type: str, complaint: bool) -> None:
    found = read_reports(_arf(f"Feedback-Type: {feedback_type}\nVersion: 1\n"))

    assert [r.kind for r in found] == ([Kind.COMPLAINT] if complaint else [])


ARF_RECIPIENTS = [
    (
        "Original-Rcpt-To: <a@X.example>\nRemoval-Recipient: b@x.example",
        "To: c@x.example\n",
        "a@x.example",
    ),
    ("Removal-Recipient: b@x.example", "To: c@x.example\n", "b@x.example"),
    ("", "To: Someone <C@X.example>\n", "C@x.example"),
    ("", "To: c@x.example, d@x.example\n", None),
    ("", "", None),
]


@pytest.mark.parametrize(("fields", "original", "recipient"), ARF_RECIPIENTS)
def test_arf_recipient(fields: str, original: str, recipient: str | None) -> None:
    [report] = read_reports(_arf(f"Feedback-Type: abuse\n{fields}\n", original))

    assert (report.recipient, report.message_id, report.format) == (recipient, "<m@x>", "arf")


def test_a_feedback_report_without_fields_is_no_complaint() -> None:
    raw = (
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\n\n'
        b"--F\nContent-Type: text/plain\n\nreport\n"
        b"--F\nContent-Type: text/plain\n\nnothing here\n--F--\n"
    )

    assert read_reports(raw) == []


def test_a_mislabelled_feedback_part_is_read() -> None:
    raw = _arf("Feedback-Type: fraud\nOriginal-Rcpt-To: a@b.example\n").replace(
        b"message/feedback-report", b"text/plain"
    )

    assert [(r.kind, r.recipient, r.diagnostic) for r in read_reports(raw)] == [
        (Kind.COMPLAINT, "a@b.example", "fraud")
    ]


def test_an_all_delivered_dsn_is_no_bounce_and_no_heuristic_is_tried() -> None:
    raw = _dsn("Final-Recipient: rfc822; a@b.example\nAction: delivered\nStatus: 2.0.0")

    assert (
        read_reports(raw + b"\nThe following addresses had permanent fatal errors: x@y.z\n") == []
    )


def test_repeated_blocks_give_one_report() -> None:
    block = "Final-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.1.1"

    assert len(read_reports(_dsn(block, block, block))) == 1


def test_oversize_is_refused() -> None:
    with pytest.raises(ReportTooLarge):
        read_reports(b"x" * (MAX_REPORT_BYTES + 1))
    assert read_reports(b"x" * MAX_REPORT_BYTES) == []


def test_a_failing_detector_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def process(self, msg: object) -> object:
            raise ValueError("boom")

    detectors = [Broken, *reports.flufl_scan._DETECTORS]
    monkeypatch.setattr(reports.flufl_scan, "_DETECTORS", detectors)

    assert _one("exim_bounce.eml").format == "flufl:exim"


# --- fuzzing ------------------------------------------------------------------------------

SAMPLES = [p.read_bytes() for p in sorted([*FLUFL.glob("dsn_*.txt"), *HANDMADE.glob("*.eml")])]


def _valid(found: object) -> None:
    assert isinstance(found, list)
    for report in found:
        assert isinstance(report, Report)
        assert report.kind in Kind
        assert report.format in ("dsn", "arf") or report.format.startswith("flufl")
        if report.recipient is not None:
            local, at, domain = report.recipient.rpartition("@")
            assert at and local and domain == domain.lower()
            assert report.recipient.isprintable() and " " not in report.recipient
        if report.status is not None:
            assert report.status[0] in "245" and report.status.count(".") == 2
        for text in (report.diagnostic, report.message_id):
            assert text is None or (text.isprintable() and text == text.strip() and text)
        assert report.diagnostic is None or len(report.diagnostic) <= 500


def _mutate(sample: bytes, how: str, rng: random.Random) -> bytes:
    if how == "truncate":
        return sample[: rng.randrange(len(sample) + 1)]
    if how == "flip":
        data = bytearray(sample)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if how == "duplicate":
        start = rng.randrange(len(sample))
        piece = sample[start : start + rng.randint(1, 2000)]
        return sample[:start] + piece * rng.randint(2, 50) + sample[start:]
    if how == "long header":
        return b"Subject: " + b'x; y="' * rng.randint(1000, 100_000) + b"\n" + sample
    if how == "folded header":
        return (
            b"Content-Type: multipart/mixed;\n" + b' a=";b";\n' * rng.randint(10, 50_000) + sample
        )
    # nested multiparts around the sample
    depth = rng.randint(10, 3000)
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="n%d"\n\n--n%d\n' % (i, i) for i in range(depth)
    )
    return opening + sample


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    _valid(reports._read(raw))
    _valid(read_reports(raw))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(SAMPLES))),
    st.sampled_from(["truncate", "flip", "duplicate", "long header", "folded header", "nested"]),
    st.randoms(use_true_random=False),
)
def test_mutated_samples_never_raise(index: int, how: str, rng: random.Random) -> None:
    raw = _mutate(SAMPLES[index], how, rng)[:MAX_REPORT_BYTES]

    # The unguarded reader: a bug of ours shows here instead of as a silent [].
    _valid(reports._read(raw))
    _valid(read_reports(raw))
