"""``/docs``: the OpenAPI description in Swagger UI, served from the package.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, so offline it is a blank page.
Here the files come from the ``swagger-ui-bundle-v2`` package, the page's one
script of our own is a file (no inline script), and nothing is fetched from
another host: no CDN, no remote favicon, no validator badge.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

_ASSETS = Path(str(importlib.resources.files("mailsched.producer") / "docs_assets"))

#: Swagger UI injects style attributes; its scripts are all files from this host.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mailsched API</title>
<link rel="stylesheet" href="/docs/swagger/swagger-ui.css">
<link rel="icon" href="data:,">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger/swagger-ui-bundle.js"></script>
<script src="/docs/start.js"></script>
</body>
</html>
"""

_HEADERS = {
    "Content-Security-Policy": DOCS_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` on ``app`` (created with ``docs_url=None``) from local files."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(_PAGE, headers=_HEADERS)

    @app.get("/docs/start.js", include_in_schema=False)
    async def start() -> FileResponse:
        return FileResponse(_ASSETS / "start.js", media_type="text/javascript", headers=_HEADERS)

    app.mount(
        "/docs/swagger",
        StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)),
        name="swagger-ui",
    )
