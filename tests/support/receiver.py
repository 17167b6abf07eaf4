"""A real HTTP/1.1 server on loopback that records webhook requests, for tests.

Minimal on purpose: it reads a request line, headers and a ``Content-Length`` body,
and answers whatever ``respond`` says. ``respond`` may wait (a hanging receiver)
or answer a redirect. Keep-alive is honoured, as a real receiver would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


Respond = Callable[[Request], Awaitable[Answer]]


async def _ok(_: Request) -> Answer:
    return Answer()


class Receiver:
    """Records every request; answers with ``respond`` (200 by default)."""

    def __init__(self, respond: Respond = _ok) -> None:
        self.respond = respond
        self.requests: list[Request] = []
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        # Closed, not cancelled: asyncio logs an error for a cancelled handler.
        for writer in self._writers:
            writer.close()
        if self._handlers:
            _done, pending = await asyncio.wait(set(self._handlers), timeout=5)
            for task in pending:
                task.cancel()

    async def wait_for(self, check: Callable[[list[Request]], bool], seconds: float = 20) -> None:
        """Return once ``check(requests)`` holds; fail after ``seconds``."""
        async with asyncio.timeout(seconds), self._arrived:
            await self._arrived.wait_for(lambda: check(self.requests))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while request := await _read(reader):
                async with self._arrived:
                    self.requests.append(request)
                    self._arrived.notify_all()
                answer = await self.respond(request)
                head = [f"HTTP/1.1 {answer.status} X", f"Content-Length: {len(answer.body)}"]
                head += [f"{k}: {v}" for k, v in answer.headers.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + answer.body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body)
