"""The new-campaign form in a real browser, on each stack: recipients from a CSV
file, a preview with the plan, and a double click on ``Create campaign`` that
makes one campaign, which then sends; a refusal shown beside its field. No
console error and no request to another host.

With ``MAILSCHED_UI_SCREENSHOTS=1`` it also saves the form with its preview at
1280x800 as ``docs/ui/new-campaign.png``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.support.browser import signed_in
from tests.support.deployment import deployed
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.e2e

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "ui"
CSV = "email,name,city\nada@example.com,Ada,London\ngrace@example.com,Grace,Arlington\n"


async def test_a_campaign_made_in_the_form_is_made_once_and_sent(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path, browser: Any
) -> None:
    recipients = tmp_path / "recipients.csv"
    recipients.write_text(CSV, encoding="utf-8")
    async with deployed(stack, {"MAILSCHED_SMTP_URL": smtp_sink.url}, tmp_path) as (app, api):
        page, watched = await signed_in(browser, app.base_url, app.key)
        await page.get_by_role("link", name="New campaign").click()
        await page.get_by_role("heading", name="New campaign").wait_for()

        # A refusal first: the field says what is wrong, and nothing is made.
        await page.get_by_label("Subject", exact=True).fill("Hello {{ name }}")
        await page.get_by_label("Body", exact=True).fill("Greetings to {{ city }}, {{ name }}.")
        await page.get_by_label("Recipients").fill("ada@example.com\nnot an address\n")
        await page.get_by_role("button", name="Preview").click()
        error = page.locator("#recipients-error")
        await error.wait_for()
        assert "line 2" in (await error.inner_text())
        assert await page.get_by_label("Recipients").get_attribute("aria-invalid") == "true"

        await page.get_by_label("CSV file").set_input_files(str(recipients))
        await page.wait_for_function(
            "() => document.getElementById('recipients').value.startsWith('email,name')"
        )
        await page.get_by_label("Seconds between emails").fill("1")
        await page.get_by_role("button", name="Preview").click()
        preview = page.get_by_role("region", name="Preview")
        await preview.wait_for()
        assert await preview.locator('[data-preview="subject"]').inner_text() == "Hello Ada"
        assert (
            "Greetings to London, Ada."
            in await preview.locator('[data-preview="body"]').inner_text()
        )
        assert await preview.locator('[data-plan="count"]').inner_text() == "2"
        if os.environ.get("MAILSCHED_UI_SCREENSHOTS") == "1":
            SHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SHOTS / "new-campaign.png"))

        # Two clicks as fast as a person's double click: one campaign.
        await preview.get_by_role("button", name="Create campaign").dblclick()
        await page.wait_for_url("**/ui/campaigns/*?notice=created")
        await page.get_by_text("Created.").wait_for()
        listed = (await api.client.get("/api/v1/email/campaigns")).json()["items"]
        assert len(listed) == 1, listed
        (made,) = listed
        assert made["recipientCount"] == 2 and made["subject"] == "Hello {{ name }}"
        assert page.url.split("?")[0].endswith(f"/ui/campaigns/{made['campaignId']}")
        await api.completed(made["campaignId"])
        await page.close()
    received = {(a.rcpt, str(a.message["Subject"])) for a in smtp_sink.arrivals}
    assert received == {("ada@example.com", "Hello Ada"), ("grace@example.com", "Hello Grace")}
    # The refused form's answer is a 422, which Chromium logs; nothing else.
    assert watched.errors == [
        "Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"
    ], watched.errors
    assert watched.foreign() == []
