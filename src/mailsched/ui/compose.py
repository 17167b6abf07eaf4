"""The new-campaign form (being built)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter

from mailsched.producer.api import Limits
from mailsched.producer.campaigns import Campaigns
from mailsched.ui.web import Pages


def compose_routes(
    pages: Pages, campaigns: Campaigns, on_created: Callable[[], None], limits: Limits
) -> APIRouter:
    """``/ui/campaigns/new``."""
    return APIRouter()
