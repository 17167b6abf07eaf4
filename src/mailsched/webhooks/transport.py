"""The HTTP client of webhooks: it connects only to addresses it has just checked.

httpcore asks its network backend to open each TCP connection by host name. The
backend here resolves the name itself, checks every address with
:func:`mailsched.webhooks.urls.resolve`, and connects to one of those addresses:
so the address checked is the address connected to, and a DNS answer that changes
between the check at creation and the send (DNS rebinding) cannot reach a private
network. The URL keeps its host name, so the Host header, TLS SNI and the
certificate check are the name's, and pooled connections are per name.

The client ignores proxy variables (``trust_env=False``): a proxy would make the
connection, and the address rule would not hold.
"""

from __future__ import annotations

import typing

import httpcore
import httpx

from mailsched.webhooks.urls import resolve

SocketOption = typing.Any


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections to checked addresses only (see the module docstring)."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore passes it by name)
        local_address: str | None = None,
        socket_options: typing.Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve and check ``host``, then connect to its addresses in turn.

        Raises :class:`~mailsched.webhooks.urls.UnsafeUrl` for a refused address.
        """
        failure: Exception | None = None
        for address in await resolve(host, port, self._allow_private):
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # resolve returns at least one address
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: typing.Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks do not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport over a pool that uses :class:`CheckedBackend`.

    httpx does not take a network backend, so the pool it builds is replaced by
    an equal one that does (its mapping of requests and errors is kept).
    """

    def __init__(self, allow_private: bool, max_connections: int) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
            network_backend=CheckedBackend(allow_private),
        )


def client(allow_private: bool, timeout: float, max_connections: int) -> httpx.AsyncClient:
    """The client the deliverer sends with: checked addresses, no redirects, no proxies."""
    return httpx.AsyncClient(
        transport=CheckedTransport(allow_private, max_connections),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    )
