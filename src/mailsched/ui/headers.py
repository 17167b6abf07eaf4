"""The dashboard's security headers on every answer under ``/ui``, not only its own.

The dashboard's handlers add them through :func:`mailsched.ui.web.secured`, but
the framework answers some requests before any handler runs or after one fails:
an unknown path (404), a wrong method (405), a query that does not validate
(422), an unexpected error (500). This ASGI middleware adds to every answer whose
path is under ``/ui`` the headers it lacks, and leaves a header a handler set as
it was. Answers elsewhere (``/api``, ``/docs``) are passed through untouched:
their pages set their own policy.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailsched.ui.web import HEADERS

PREFIX = "/ui"


def under_ui(path: str) -> bool:
    """Whether ``path`` is the dashboard's: ``/ui`` itself or below it, not ``/uix``."""
    return path == PREFIX or path.startswith(PREFIX + "/")


class UiHeaders:
    """ASGI middleware: the dashboard's security headers on every answer under ``/ui``."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str] = HEADERS) -> None:
        self.app = app
        self._headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not under_ui(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = False

        async def secured_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": self._added(message.get("headers") or [])}
            await send(message)

        try:
            await self.app(scope, receive, secured_send)
        except Exception:
            # Starlette's own 500 is sent outside every middleware, without the
            # headers: answer here, then let the error go on to be logged (the
            # server sees the answer started and sends nothing more).
            if not started:
                await self._internal_error(send)
            raise

    def _added(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        present = {name.lower() for name, _ in headers}
        return [*headers, *((k, v) for k, v in self._headers if k not in present)]

    async def _internal_error(self, send: Send) -> None:
        body = b"Internal Server Error"
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": self._added(
                    [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                    ]
                ),
            }
        )
        await send({"type": "http.response.body", "body": body})
