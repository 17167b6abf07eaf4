"""Schemathesis against a running API on each stack: no 5xx, no response outside the schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack
from tests.support.processes import Mailsched, auth, create_key
from tests.support.smtp_sink import SmtpSink, free_port

pytestmark = pytest.mark.e2e

CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
    ]
)


def test_the_api_keeps_its_openapi_contract(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    env = stack.env() | {
        "MAILSCHED_PORT": str(free_port()),
        "MAILSCHED_SMTP_URL": smtp_sink.url,
        # The fuzzer sends hundreds of requests; the per-key limit has its own tests.
        "MAILSCHED_REQUESTS_PER_MINUTE": "1000000",
    }
    command = ["api"] if stack.kafka_bootstrap_servers else ["run"]
    with Mailsched(command, env, tmp_path, "api") as api:
        api.wait_ready()
        key = create_key(env, tmp_path)
        config = _one_campaign_for_its_routes(api.base_url, key, tmp_path)
        cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
        assert cli, "schemathesis is a dev dependency"
        result = subprocess.run(
            [
                cli,
                "--config-file",
                str(config),
                "run",
                f"{api.base_url}/openapi.json",
                "--header",
                f"Authorization: Bearer {key}",
                "--checks",
                CHECKS,
                "--max-examples",
                "40",
                "--seed",
                "20261128",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        server_log = api.output()
    # The run's summary (how many cases, which checks): shown with ``pytest -rP``.
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:]
    assert "Traceback" not in server_log, server_log[-4000:]


def _one_campaign_for_its_routes(base_url: str, key: str, tmp_path: Path) -> Path:
    """A config giving the routes under a campaign one that exists: with ids made up,
    pause, resume, cancel, retry and the deliveries only ever answer 404.
    ``GET /campaign/{id}`` keeps made-up ids."""
    body = {
        "userId": 1,
        "subject": "Fuzzed",
        "body": "Planned far ahead, never sent.",
        "startTime": "2099-01-01T00:00:00Z",
        "delaySeconds": 60,
        "hourlyLimit": 10,
        "recipients": [f"r{i}@example.com" for i in range(3)],
    }
    response = httpx.post(f"{base_url}/api/v1/email/campaign", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[[operations]]\n"
        'include-path-regex = "/campaign/\\\\{campaign_id\\\\}/"\n'
        f"parameters = {{ campaign_id = {response.json()['campaignId']} }}\n"
    )
    return config
