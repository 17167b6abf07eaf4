"""Templates and header text the API must refuse at creation, over each database.

Each case is a ``422`` with the usual error body naming the field (and, for what
depends on one recipient's values, the recipient), and nothing is stored. Before
the hardening issue's items 2 to 4 they were a ``201`` whose every delivery then
failed, a ``201`` sending a heap address, or a ``500``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mailsched.bootstrap import build
from mailsched.config import Settings
from mailsched.errors import Invalid
from mailsched.producer.schemas import CampaignRequest
from mailsched.store.db import Database
from mailsched.store.migrate import upgrade
from mailsched.store.tables import campaigns, deliveries
from tests.support.api import URL, spec_body

#: What Python's email package refuses in a header (the line boundaries of
#: str.splitlines), and NUL, which it would let into the header raw.
HEADER_BREAKS = {
    "NUL": "\x00",
    "VT": "\x0b",
    "FF": "\x0c",
    "FS": "\x1c",
    "GS": "\x1d",
    "RS": "\x1e",
    "NEL": "\x85",
    "U+2028": "\u2028",
    "U+2029": "\u2029",
}


async def count_rows(db: Database) -> tuple[int, int]:
    async def work(conn: Any) -> tuple[int, int]:
        c = (await conn.execute(select(func.count()).select_from(campaigns))).scalar_one()
        d = (await conn.execute(select(func.count()).select_from(deliveries))).scalar_one()
        return c, d

    return await db.run(work)


async def assert_refused(
    client: httpx.AsyncClient, db: Database, body: dict[str, Any], field: str, text: str = ""
) -> None:
    response = await client.post(URL, json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "invalid_request"
    problems = {d["field"]: d["message"] for d in answer["detail"]}
    assert field in problems, problems
    assert text in problems[field], problems
    assert await count_rows(db) == (0, 0)


@pytest.mark.parametrize("char", HEADER_BREAKS.values(), ids=HEADER_BREAKS.keys())
async def test_a_header_break_in_the_subject_is_refused(
    client: httpx.AsyncClient, db: Database, char: str
) -> None:
    await assert_refused(client, db, spec_body(subject=f"Hello{char}there"), "subject")


@pytest.mark.parametrize("char", HEADER_BREAKS.values(), ids=HEADER_BREAKS.keys())
async def test_a_header_break_in_a_name_is_refused(
    client: httpx.AsyncClient, db: Database, char: str
) -> None:
    recipients = ["a@example.com", {"email": "b@example.com", "name": f"Bob{char}Smith"}]
    await assert_refused(client, db, spec_body(recipients=recipients), "recipients.1")


@pytest.mark.parametrize("char", HEADER_BREAKS.values(), ids=HEADER_BREAKS.keys())
async def test_a_header_break_from_a_variable_in_the_subject_is_refused(
    client: httpx.AsyncClient, db: Database, char: str
) -> None:
    recipients = [
        {"email": "a@example.com", "vars": {"city": "Oslo"}},
        {"email": "b@example.com", "vars": {"city": f"Rome{char}Bcc: eve@evil.example"}},
    ]
    body = spec_body(subject="News from {{ city }}", recipients=recipients)
    await assert_refused(client, db, body, "recipients.1", "subject")


async def test_the_same_characters_in_a_body_variable_are_fine(client: httpx.AsyncClient) -> None:
    recipients = [{"email": "a@example.com", "vars": {"v": "".join(HEADER_BREAKS.values())}}]
    response = await client.post(URL, json=spec_body(body="{{ v }}", recipients=recipients))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        # 480 kB from a 20-character subject; 10 MB from a 24-character body.
        ({"subject": "{{ [[1]*400]*400 }}"}, "recipients.0", "subject"),
        ({"body": '{{ ["a"*100000]*100 }}'}, "recipients.0", "body"),
        # A method would print as its repr, a heap address.
        ({"subject": "{{ email.split }}"}, "recipients.0", "cannot be written"),
        ({"body": "{{ email.split }}"}, "recipients.0", "cannot be written"),
        # An AssertionError inside Jinja: a 500 before.
        ({"subject": "{{ name|truncate(1) }}"}, "recipients.0", "AssertionError"),
        # A RecursionError: a 500 before.
        ({"subject": "{{ " + "(" * 300 + "1" + ")" * 300 + " }}"}, "subject", "nest"),
        ({"body": "{% if 1 %}" * 240 + "{% endif %}" * 240}, "body", "nest"),
        ({"htmlBody": "{% if 1 %}" * 300 + "{% endif %}" * 300}, "htmlBody", "tags"),
        # 998 characters at most once rendered.
        ({"subject": "{{ 'x' * 999 }}"}, "recipients.0", "998"),
        # The review: replace converted 1 to "1" after the weighing (10 GB), and in
        # HTML replaced in the escaped text ("&lt;") it had not weighed.
        ({"body": '{{ ("1"*100000)|replace(1, "x"*100000) }}'}, "recipients.0", "body"),
        (
            {"htmlBody": '{{ ("<"*100000)|replace("lt", ("x"*100000)|safe) }}'},
            "recipients.0",
            "htmlBody",
        ),
        # One value printed by each of 16,000 directives: 1.6 GB.
        ({"body": "{{ ('%(a)s' * 16000) % {'a': 'x' * 100000} }}"}, "recipients.0", "body"),
        ({"body": "{{ '%(a)999999999s' % {'a': 1} }}"}, "recipients.0", "format widths"),
        # Filters of a constant ran while compiling, outside the budget: 1 s, 3 times.
        ({"body": '{{ "' + "a b " * 16000 + '"' + "|title" * 60 + " }}"}, "recipients.0", "work"),
        # A method made text printed its heap address.
        ({"subject": "{{ name.upper ~ '' }}"}, "recipients.0", "cannot be written"),
        ({"body": "{{ name.upper|string }}"}, "recipients.0", "cannot be written"),
        ({"htmlBody": "{{ email['split'] ~ 1 }}"}, "recipients.0", "cannot be written"),
    ],
)
async def test_hostile_templates_are_refused(
    client: httpx.AsyncClient, db: Database, changes: dict[str, Any], field: str, text: str
) -> None:
    await assert_refused(client, db, spec_body(**changes), field, text)


async def test_the_recipient_whose_body_is_too_large_is_named(
    client: httpx.AsyncClient, db: Database
) -> None:
    # 500 times a variable of 1,000 characters: 500 kB of ASCII, but 2 MB of emoji.
    recipients = [
        {"email": "a@example.com", "vars": {"v": "s" * 1000}},
        {"email": "b@example.com", "vars": {"v": "\N{GRINNING FACE}" * 1000}},
    ]
    body = spec_body(body="{{ v }}" * 500, recipients=recipients)
    await assert_refused(client, db, body, "recipients.1", "body: renders to more than 1048576")
    assert await count_rows(db) == (0, 0)


@pytest.mark.parametrize(
    ("body", "first", "second"),
    [
        # The static bound left out keyword arguments: 11 x 4,000 bytes, which
        # renders 1.1 MB for a recipient whose v is empty.
        ('{{ v|d(default_value="x"*100000, boolean=true) }}' * 11, "a", ""),
        # And took any number for short: 250 x 4,300 digits.
        ("{{ v }}" * 250, 1, 10**4299),
    ],
    ids=["keyword", "number"],
)
async def test_a_body_the_static_bound_missed_is_rendered_for_every_recipient(
    client: httpx.AsyncClient, db: Database, body: str, first: object, second: object
) -> None:
    recipients = [
        {"email": "a@example.com", "vars": {"v": first}},
        {"email": "b@example.com", "vars": {"v": second}},
    ]
    await assert_refused(
        client, db, spec_body(body=body, recipients=recipients), "recipients.1", "body: renders"
    )


async def test_the_configured_body_limit_bounds_what_a_template_renders(
    database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``MAILSCHED_MAX_BODY_BYTES`` reaches the creation check through the wiring: a body
    template within the limit as written, over it for one recipient, is a 422 naming
    that recipient."""
    monkeypatch.setenv("MAILSCHED_DATABASE_URL", database_url)
    monkeypatch.setenv("MAILSCHED_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("MAILSCHED_MAX_BODY_BYTES", "300")
    components = await build(Settings.load())
    try:
        await upgrade(components.db)
        body = spec_body(
            body="Hello {{ bio }}",
            recipients=[
                {"email": "a@example.com", "vars": {"bio": "short"}},
                {"email": "b@example.com", "vars": {"bio": "x" * 400}},
            ],
        )
        with pytest.raises(Invalid) as refused:
            await components.campaigns().create(CampaignRequest.model_validate(body))
        assert [field for field, _ in refused.value.problems] == ["recipients.1"]
        assert await count_rows(components.db) == (0, 0)
    finally:
        await components.aclose()
