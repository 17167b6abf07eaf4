"""The suppressions and webhooks pages in a real browser, on each stack: suppress an
address and remove it again with the keyboard alone (Tab and Enter), its pending
delivery suppressed; add a webhook endpoint, see its secret once, delete it; no
console error and no request to another host.

With ``MAILSCHED_UI_SCREENSHOTS=1`` it also saves the pages at 1280x800 as
``docs/ui/suppressions.png`` and ``docs/ui/webhooks.png``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.e2e.test_ui_browser import _create, _shot
from tests.support.browser import signed_in
from tests.support.deployment import Api, deployed
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.e2e

#: Tabs a keyboard user may need to reach a control (the navigation comes first).
MAX_TABS = 30
HOOK = "http://127.0.0.1:9/hook"  # never called: no event happens while it exists


async def _tab_to(page: Any, selector: str) -> None:
    """Press Tab until the element ``selector`` names has the focus."""
    for _ in range(MAX_TABS):
        await page.keyboard.press("Tab")
        if await page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} not reached in {MAX_TABS} tabs")


async def _counts(api: Api, campaign_id: int) -> dict[str, int]:
    view = (await api.client.get(f"/api/v1/email/campaign/{campaign_id}")).json()
    return {status: n for status, n in view["counts"].items() if n}


async def _suppressed(api: Api) -> list[str]:
    listed = (await api.client.get("/api/v1/email/suppressions")).json()
    return [item["address"] for item in listed["items"]]


async def test_suppressions_and_webhooks_from_the_dashboard(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path, browser: Any
) -> None:
    env = {"MAILSCHED_SMTP_URL": smtp_sink.url, "MAILSCHED_WEBHOOK_ALLOW_PRIVATE_URLS": "true"}
    async with deployed(stack, env, tmp_path) as (app, api):
        campaign_id = await _create(api, "Next month", datetime.now(UTC) + timedelta(days=30), 3)
        for address in ("bounced@example.org", "former.customer@example.net"):
            answer = await api.client.post("/api/v1/email/suppressions", json={"address": address})
            assert answer.status_code == 201, answer.text
        page, watched = await signed_in(browser, app.base_url, app.key)

        # Suppress and remove with the keyboard alone.
        await page.get_by_role("link", name="Suppressions").click()
        await page.get_by_role("heading", name="Suppressions", exact=True).wait_for()
        await _tab_to(page, "#address")
        await page.keyboard.type("UI1@Example.COM")
        await page.keyboard.press("Enter")
        await page.get_by_text("Address suppressed; 1 pending delivery suppressed.").wait_for()
        assert await _counts(api, campaign_id) == {"SCHEDULED": 2, "SUPPRESSED": 1}
        assert "ui1@example.com" in await _suppressed(api)
        await page.get_by_role("cell", name="ui1@example.com", exact=True).wait_for()
        await _shot(page, "suppressions.png")
        await _tab_to(page, 'button[aria-label="Remove ui1@example.com"]')
        await page.keyboard.press("Enter")
        await page.get_by_text("The address is no longer suppressed").wait_for()
        assert await _suppressed(api) == ["bounced@example.org", "former.customer@example.net"]
        assert await page.get_by_role("cell", name="ui1@example.com").count() == 0

        # An endpoint: its secret on the answer to the form, and never again.
        await page.get_by_role("link", name="Webhooks").click()
        await page.get_by_role("heading", name="Webhooks", exact=True).wait_for()
        await page.get_by_label("URL").fill(HOOK)
        await page.get_by_label("Description").fill("CRM <sync>")
        await page.get_by_label("All, including types added later").uncheck()
        await page.get_by_label("delivery.sent").check()
        await page.get_by_label("delivery.failed").check()
        await page.get_by_role("button", name="Add endpoint").click()
        secret = await page.get_by_label("Signing secret").input_value()
        assert secret.startswith("whsec_")
        listed = (await api.client.get("/api/v1/webhooks")).json()["items"]
        assert [(e["url"], e["description"], e["events"]) for e in listed] == [
            (HOOK, "CRM <sync>", ["delivery.sent", "delivery.failed"])
        ]
        await page.get_by_role("cell", name="CRM <sync>").wait_for()
        await _shot(page, "webhooks.png")
        await page.get_by_role("link", name="Webhooks").click()
        await page.get_by_role("heading", name="Webhooks", exact=True).wait_for()
        assert secret not in await page.content()
        assert await page.get_by_label("Signing secret").count() == 0
        await page.get_by_role("button", name=f"Delete endpoint {listed[0]['webhookId']}").click()
        await page.get_by_text("The endpoint is deleted").wait_for()
        assert (await api.client.get("/api/v1/webhooks")).json()["items"] == []
        await page.close()
    assert watched.errors == [], watched.errors
    assert watched.foreign() == []
