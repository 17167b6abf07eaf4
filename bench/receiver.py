"""A webhook receiver for the bench, in its own process: answers 200 at once, notes arrivals.

``python -m bench.receiver --port N`` serves HTTP/1.1 with keep-alive on 127.0.0.1.
Every ``POST`` is answered ``200`` as soon as its body is read (nothing is
verified: the receiver must not be what is measured) and noted with its arrival
time (``time.time()``) and the event ids it carried: the ``webhook-id`` of a
single event, the ``eventId`` fields of a batch. Two ``GET``\\ s report:

* ``/stats``: ``{"requests", "events", "first", "last"}`` (arrival times, epoch seconds);
* ``/arrivals``: ``[[event_id, arrival], ...]``, every event as it arrived.

It runs apart from the bench (and from mailsched) so that neither waits for the
other's share of a GIL; :class:`ReceiverProcess` starts, asks and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from typing import Any

import httpx

from bench.paths import REPO
from bench.procs import free_port

_EVENT_ID = re.compile(rb'"eventId":(\d+)')
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class _Log:
    """What arrived, in order."""

    def __init__(self) -> None:
        self.requests = 0
        self.arrivals: list[tuple[int, float]] = []
        self.first: float | None = None
        self.last: float | None = None

    def note(self, headers: dict[str, str], body: bytes) -> None:
        at = time.time()
        message_id = headers.get("webhook-id", "")
        ids = [int(message_id)] if message_id.isdigit() else map(int, _EVENT_ID.findall(body))
        self.arrivals.extend((event_id, at) for event_id in ids)
        self.requests += 1
        self.first = self.first or at
        self.last = at

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "events": len(self.arrivals),
            "first": self.first,
            "last": self.last,
        }


async def _serve(
    log: _Log,
    writers: set[asyncio.StreamWriter],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    writers.add(writer)
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ", 2)[:2]
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "POST":
                log.note(headers, body)
                writer.write(_OK)
            else:
                report = log.arrivals if path == "/arrivals" else log.stats()
                data = json.dumps(report).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writers.discard(writer)
        writer.close()


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    log = _Log()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    writers: set[asyncio.StreamWriter] = set()
    server = await asyncio.start_server(
        lambda r, w: _serve(log, writers, r, w), "127.0.0.1", port, backlog=1024
    )
    async with server:
        await stop.wait()
        # Closed, not cancelled: a handler cancelled at exit is logged as an error.
        for writer in list(writers):
            writer.close()
        await asyncio.sleep(0.1)


class ReceiverProcess:
    """``python -m bench.receiver`` on a free port, until :meth:`stop`."""

    def __init__(self) -> None:
        self.port = free_port()
        self._popen = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", "--port", str(self.port)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
        )
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30.0)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self._popen.poll() is not None:
                    self.stop()
                    raise RuntimeError("the bench's webhook receiver did not start") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stats(self) -> dict[str, Any]:
        """``{"requests", "events", "first", "last"}``."""
        return dict(self._http.get("/stats").json())

    def arrivals(self) -> dict[int, float]:
        """Each event's first arrival (epoch seconds), by event id."""
        first: dict[int, float] = {}
        for event_id, at in self._http.get("/arrivals").json():
            first.setdefault(event_id, at)
        return first

    async def wait_events(self, count: int, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        """Poll until ``count`` events arrived or ``timeout`` seconds passed; the last stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await asyncio.to_thread(self.stats)
            if stats["events"] >= count or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        self._http.close()
        if self._popen.poll() is None:
            self._popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(10)
        if self._popen.poll() is None:
            self._popen.kill()
            self._popen.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
