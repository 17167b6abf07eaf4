"""The README's receiver, run as written: it verifies what mailsched sends, and
refuses what someone else signed."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from mailsched.store.db import Database
from mailsched.webhooks.deliver import WebhookDeliverer
from tests.integration.webhooks.conftest import add_endpoint, add_events, fan_out
from tests.support.smtp_sink import free_port

README = Path(__file__).parents[3] / "README.md"


def receiver_code() -> str:
    """The Python block after the README's ``<!-- receiver`` marker."""
    text = README.read_text()
    found = re.search(r"<!-- receiver.*?-->\s*```python\n(.*?)```", text, re.S)
    assert found, "the README has no receiver block"
    return found.group(1)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], str]]:
    """The README's receiver with a secret and a free port; ``(url, process, secret)``."""
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # add_endpoint's
    port = free_port()
    code = receiver_code()
    assert code.count('"whsec_..."') == 1 and code.count("8000") == 1
    script = tmp_path / "receiver.py"
    script.write_text(code.replace('"whsec_..."', repr(secret)).replace("8000", str(port)))
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        yield f"http://127.0.0.1:{port}/hook", process, secret
    finally:
        process.kill()
        process.wait()


async def _listening(url: str) -> None:
    async with asyncio.timeout(20), httpx.AsyncClient() as client:
        while True:
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)


async def test_the_readme_receiver_verifies_mailscheds_webhooks(
    db: Database,
    deliverer_for: Callable[..., WebhookDeliverer],
    receiver: tuple[str, subprocess.Popen[str], str],
) -> None:
    url, process, _ = receiver
    await _listening(url)
    # Someone without the secret: refused with a 401.
    async with httpx.AsyncClient() as client:
        forged = await client.post(
            url,
            content=b'{"type":"delivery.sent"}',
            headers={
                "webhook-id": "1",
                "webhook-timestamp": "1764579600",
                "webhook-signature": "v1,AAAA",
            },
        )
    assert forged.status_code == 401

    await add_endpoint(db, 1, url)
    events = await add_events(db, 1, 2)
    await fan_out(db, events)
    deliverer = deliverer_for()
    made = 0
    for _ in range(1000):
        made += await deliverer.deliver_once()
        if made >= 2:
            break
        await asyncio.sleep(0.02)
    assert made == 2
    process.kill()
    out, _ = process.communicate()
    lines = out.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("delivery.sent {'campaignId': 7") for line in lines)
