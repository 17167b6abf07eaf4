"""``mailsched webhooks`` as a real process beside ``mailsched api`` and ``mailsched
worker`` on MariaDB + Kafka: the events of a campaign go through the events topic
to a receiver; the process serves /metrics and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.e2e.test_run import campaign
from tests.support.processes import Mailsched, auth, create_key
from tests.support.smtp_sink import SmtpSink, free_port

pytestmark = pytest.mark.e2e


class Receiver:
    """An HTTP server on loopback that answers 200 and keeps every body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_the_webhooks_process_delivers_a_campaigns_events_and_stops_cleanly(
    real_stack: Stack, smtp_sink: SmtpSink, receiver: Receiver, tmp_path: Path
) -> None:
    env = real_stack.env() | {
        "MAILSCHED_PORT": str(free_port()),
        "MAILSCHED_SMTP_URL": smtp_sink.url,
        "MAILSCHED_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
    }
    recipients = [f"hook{i}@example.com" for i in range(3)]
    with (
        Mailsched(["api"], env, tmp_path, "api") as api,
        Mailsched(["worker"], env, tmp_path, "worker"),
        Mailsched(["webhooks"], env, tmp_path, "webhooks") as webhooks,
    ):
        api.wait_ready()
        key = create_key(env, tmp_path)
        hook = httpx.post(
            f"{api.base_url}/api/v1/webhooks",
            json={"url": receiver.url, "events": ["delivery.sent"]},
            headers=auth(key),
        )
        assert hook.status_code == 201, hook.text
        created = httpx.post(
            f"{api.base_url}/api/v1/email/campaign",
            json=campaign(recipients, delay=0, limit=1000),
            headers=auth(key),
        )
        assert created.status_code == 201, created.text

        deadline = time.monotonic() + 60
        while len({b["data"]["recipient"] for b in receiver.bodies}) < len(recipients):
            assert time.monotonic() < deadline, (receiver.bodies, webhooks.output()[-3000:])
            time.sleep(0.1)
        assert {b["type"] for b in receiver.bodies} == {"delivery.sent"}

        metrics = httpx.get(webhooks.metrics_url(), timeout=5).text
        assert 'mailsched_webhook_attempts_total{status_class="2xx"}' in metrics
        relayed = httpx.get(f"{api.base_url}/metrics", timeout=5).text
        assert "mailsched_events_relayed_total" in relayed
        assert webhooks.stop() == 0, webhooks.output()[-3000:]
    assert "Traceback" not in webhooks.output(), webhooks.output()[-3000:]
