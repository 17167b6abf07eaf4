"""``/docs`` works offline: Swagger UI from the package, nothing from another host."""

from __future__ import annotations

import re

import httpx


async def test_the_docs_page_loads_only_local_files(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert page.headers["x-frame-options"] == "DENY"
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "<script>" not in page.text, "no inline script: the policy would refuse it"
    local = [u for u in urls if not u.startswith("data:")]
    assert local and all(u.startswith("/") and not u.startswith("//") for u in local), urls
    for url in local:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    start = (await client.get("/docs/start.js")).text
    assert '"/openapi.json"' in start and "validatorUrl: null" in start


async def test_no_page_loads_from_a_cdn(client: httpx.AsyncClient) -> None:
    assert (await client.get("/redoc")).status_code == 404  # FastAPI's loads from a CDN
    for url in ("/docs", "/docs/start.js"):
        text = (await client.get(url)).text
        assert not re.search(r"https?://", text), url
