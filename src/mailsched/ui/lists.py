"""The suppressions and webhooks pages (being built)."""

from __future__ import annotations

from fastapi import APIRouter

from mailsched.store.db import Database
from mailsched.ui.web import Pages


def list_routes(pages: Pages, db: Database, *, allow_private_urls: bool) -> APIRouter:
    """``/ui/suppressions`` and ``/ui/webhooks``."""
    return APIRouter()
