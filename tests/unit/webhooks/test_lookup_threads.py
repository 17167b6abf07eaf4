"""Name lookups that hang keep to their own threads: the default executor, which
template checks, SMTP and the ``.eml`` outbox share, stays free."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest

from mailsched.errors import UnsafeUrl
from mailsched.webhooks import urls


async def test_hanging_lookups_leave_the_default_executor_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released = threading.Event()

    def silent_name_server(*_args: Any, **_kwargs: Any) -> Any:
        released.wait(30)
        raise socket.gaierror("no answer")

    monkeypatch.setattr(urls.socket, "getaddrinfo", silent_name_server)
    monkeypatch.setattr(urls, "RESOLVE_TIMEOUT", 0.1)
    try:
        # More stuck lookups than the default executor has threads (min(32, cpus + 4)).
        lookups = [urls.resolve(f"h{i}.example.com", 443, False) for i in range(40)]
        results = await asyncio.gather(*lookups, return_exceptions=True)
        assert all(isinstance(r, UnsafeUrl) for r in results)
        async with asyncio.timeout(5):
            assert await asyncio.to_thread(lambda: "free") == "free"
    finally:
        released.set()
