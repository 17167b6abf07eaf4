"""The README's sending-calendar example, planned as written: its table is what
``/campaign/plan`` answers for it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

README = Path(__file__).parents[2] / "README.md"

#: The worked example's recipients, in the request's order (the README names them).
RECIPIENTS = [
    {"email": "aiko@example.jp", "timezone": "Asia/Tokyo"},
    {"email": "ben@example.com", "timezone": "America/New_York"},
    {"email": "carla@example.de"},
    {"email": "dev@example.in", "timezone": "Asia/Kolkata"},
    {"email": "emma@example.jp", "timezone": "Asia/Tokyo"},
    {"email": "fumi@example.jp", "timezone": "Asia/Tokyo"},
]


def section() -> str:
    text = README.read_text()
    found = re.search(r"^## Sending calendar\n(.*?)^## ", text, re.S | re.M)
    assert found, "the README has no Sending calendar section"
    return found.group(1)


def schedule() -> dict[str, Any]:
    block = re.search(r"```json\n(.*?)```", section(), re.S)
    assert block
    value = json.loads("{" + block.group(1) + "}")["schedule"]
    assert isinstance(value, dict)
    return value


def example_rows() -> list[tuple[str, str, str]]:
    """``(name, zone, UTC time)`` from the worked example's table, in send order."""
    text = section().split("**Worked example.**", 1)[1].split("**Ask before you send.**")[0]
    rows = []
    day = ""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 5 or not re.fullmatch(r"(\d{4}-\d{2}-\d{2} )?\d{2}:\d{2}", cells[2]):
            continue
        if " " in cells[2]:
            day, clock = cells[2].split()
        else:
            clock = cells[2]
        zone = cells[1].split()[-1]
        rows.append((cells[0], zone, f"{day}T{clock}:00Z"))
    return rows


async def test_the_worked_example_is_what_the_plan_says(client: httpx.AsyncClient) -> None:
    body = {
        "userId": 1,
        "subject": "Winter sale",
        "body": "Hello!",
        "startTime": "2026-12-24T07:00:00Z",
        "delaySeconds": 60,
        "hourlyLimit": 2,
        "recipients": RECIPIENTS,
        "schedule": {**schedule(), "jitterSeconds": 0},
    }
    answer = await client.post("/api/v1/email/campaign/plan", json=body)
    assert answer.status_code == 200, answer.text
    planned = [
        (d["recipient"].split("@")[0], d["timezone"], d["scheduledAt"])
        for d in answer.json()["deliveries"]
    ]
    rows = example_rows()
    assert len(rows) == len(RECIPIENTS)
    assert planned == rows
