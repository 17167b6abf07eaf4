"""``/docs`` in a real browser, on each stack: Swagger UI renders the API from local
files, with no console error and no request to another host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.support.browser import Watched, watch
from tests.support.processes import Mailsched
from tests.support.smtp_sink import SmtpSink, free_port

pytestmark = pytest.mark.e2e


async def test_the_docs_render_offline(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path, browser: Any
) -> None:
    env = stack.env() | {"MAILSCHED_PORT": str(free_port()), "MAILSCHED_SMTP_URL": smtp_sink.url}
    command = ["api"] if stack.kafka_bootstrap_servers else ["run"]
    with Mailsched(command, env, tmp_path, "api") as api:
        api.wait_ready()
        watched = Watched(api.base_url)
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        watch(page, watched)
        await page.goto(f"{api.base_url}/docs")
        # Swagger UI has read /openapi.json and drawn the operations.
        await page.get_by_text("/api/v1/email/campaign/plan").first.wait_for(timeout=15_000)
        assert await page.locator(".opblock").count() > 10
        await page.close()
    assert watched.errors == []
    assert watched.foreign() == []
    assert f"{api.base_url}/openapi.json" in watched.requests
