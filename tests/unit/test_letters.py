"""LetterFactory: a campaign's HTML, templates and unsubscribe links reach the letter."""

from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from mailsched.consumer import letters
from mailsched.consumer.letters import LetterFactory
from mailsched.domain.model import Campaign, CampaignStatus
from mailsched.errors import PermanentSendError
from mailsched.mail.message import MessageTemplate
from mailsched.mail.verp import ReturnPath
from mailsched.unsubscribe import Unsubscribe, UnsubscribeSigner

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SIGNER = UnsubscribeSigner(b"s" * 32)

CAMPAIGN = Campaign(
    id=5,
    user_id=42,
    subject="Hi {{ name }}",
    body="Your code: {{ code }}\n",
    start_time=NOW,
    delay_seconds=0,
    hourly_limit=10,
    status=CampaignStatus.RUNNING,
    recipient_count=2,
    slot_seq=0,
    created_at=NOW,
    completed_at=None,
    html_body="<p>{{ code }}</p>",
    templated=True,
)


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def links(user_id: int, address: str) -> Unsubscribe:
    return SIGNER.links("https://mail.example.com", "example.com", user_id, address)


async def test_templated_html_campaign_with_unsubscribe_links() -> None:
    factory = LetterFactory("news@example.com", links=links)

    letter = await factory.build(
        CAMPAIGN, 7, "ann@example.org", NOW, name="Ann", variables={"code": "A1"}
    )
    parsed = parse(letter.data)

    assert (letter.campaign_id, letter.delivery_id, letter.recipient) == (5, 7, "ann@example.org")
    assert parsed["Subject"] == "Hi Ann"
    assert parsed["To"].addresses[0].display_name == "Ann"
    html = parsed.get_body(("html",))
    assert isinstance(html, EmailMessage)
    assert html.get_content().strip() == "<p>A1</p>"
    url = parsed["List-Unsubscribe"].split(",")[0].strip("<> ")
    assert SIGNER.verify(url.rsplit("/", 1)[1]) == (42, "ann@example.org")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_without_links_there_is_no_list_unsubscribe() -> None:
    plain = replace(CAMPAIGN, subject="Hello", body="Body\n", html_body=None, templated=False)

    parsed = parse(
        (await LetterFactory("news@example.com").build(plain, 1, "a@example.org", NOW)).data
    )

    assert "List-Unsubscribe" not in parsed
    assert parsed["Subject"] == "Hello"


@pytest.mark.parametrize("templated", [True, False])
async def test_a_return_path_makes_each_envelope_sender_name_its_delivery(templated: bool) -> None:
    return_path = ReturnPath("bounces@bounce.example.com", b"v" * 32)
    factory = LetterFactory("news@example.com", links=links, return_path=return_path.address)
    campaign = CAMPAIGN if templated else replace(CAMPAIGN, templated=False, subject="Hello")

    sent = [
        await factory.build(campaign, delivery, "ann@example.org", NOW, variables={"code": "A"})
        for delivery in (7, 8)
    ]

    assert [return_path.delivery_of(letter.sender) for letter in sent] == [7, 8]
    assert sent[0].sender.startswith("bounces+") and sent[0].sender != sent[1].sender
    for letter in sent:
        parsed = parse(letter.data)
        assert parsed["From"] == "news@example.com"  # the From header is unchanged
        assert "Return-Path" not in parsed  # the receiving server adds it


async def test_without_a_return_path_the_envelope_sender_is_the_from_address() -> None:
    letter = await LetterFactory("news@example.com").build(
        CAMPAIGN, 7, "ann@example.org", NOW, variables={"code": "A"}
    )

    assert letter.sender == "news@example.com"


async def test_a_recipient_the_template_fails_on_is_a_permanent_failure() -> None:
    factory = LetterFactory("news@example.com", links=links)

    with pytest.raises(PermanentSendError, match="'code' is undefined"):
        await factory.build(CAMPAIGN, 8, "bob@example.org", NOW, variables={})
    # The next recipient is not affected.
    assert (await factory.build(CAMPAIGN, 9, "c@example.org", NOW, variables={"code": "C"})).data


async def test_a_campaign_whose_template_does_not_compile_fails_each_delivery() -> None:
    broken = replace(CAMPAIGN, id=6, body="{% for x in y %}{% endfor %}")

    with pytest.raises(PermanentSendError, match="body"):
        await LetterFactory("news@example.com").build(broken, 1, "a@example.org", NOW)


async def test_templates_are_kept_per_campaign_within_a_byte_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[int] = []
    real = letters.MessageTemplate

    def counting(campaign_id: int, *args: object, **kwargs: object) -> letters.MessageTemplate:
        built.append(campaign_id)
        return real(campaign_id, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(letters, "MessageTemplate", counting)
    plain = replace(CAMPAIGN, templated=False, html_body=None, body="x" * 1000)
    one, two, three = (replace(plain, id=i) for i in (1, 2, 3))
    # Room for two templates of about 1.1 kB each, not three.
    factory = LetterFactory("news@example.com", max_bytes=2500)

    for campaign in (one, two, one, two, one, three, one, two):
        await factory.build(campaign, 1, "a@example.org", NOW)

    # 1 and 2 built once while two fit; 3 pushed out 2 (least recently used), then 2 came back.
    assert built == [1, 2, 3, 2]


@pytest.mark.parametrize(
    "body",
    [
        "{{ name|truncate(1) }}",  # AssertionError inside Jinja
        "{{ email.split }}",  # a method, which would print as its repr
        "{{ ['a' * 100000] * 100 }}",  # 10 MB
        "{{ 2.0 ** 5000 }}",  # OverflowError
    ],
)
async def test_every_template_error_is_permanent(body: str) -> None:
    # Before, only ValueError was: an AssertionError was retried as if transient.
    broken = replace(CAMPAIGN, id=11, body=body, html_body=None)

    with pytest.raises(PermanentSendError, match="body"):
        await LetterFactory("news@example.com").build(broken, 1, "a@example.org", NOW, name="Ann")


async def test_build_makes_templated_and_large_letters_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[bool] = []
    real = MessageTemplate.render

    def recording(self: MessageTemplate, *args: Any, **kwargs: Any) -> bytes:
        threads.append(threading.current_thread() is threading.main_thread())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MessageTemplate, "render", recording)
    factory = LetterFactory("news@example.com", links=links)
    plain = replace(CAMPAIGN, id=21, subject="Hi", body="Short\n", html_body=None, templated=False)

    templated = await factory.build(CAMPAIGN, 1, "a@example.org", NOW, variables={"code": "A"})
    small = await factory.build(plain, 2, "b@example.org", NOW)

    assert parse(templated.data)["Subject"] == "Hi "
    assert parse(small.data)["Subject"] == "Hi"
    # The templated letter was rendered off the event loop's thread; the plain one on it.
    assert threads == [False, True]
    with pytest.raises(PermanentSendError, match="AssertionError"):
        await factory.build(
            replace(CAMPAIGN, id=22, body="{{ name|truncate(1) }}"), 3, "c@x.org", NOW
        )
