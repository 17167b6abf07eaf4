"""Which webhook URLs are safe to call: the SSRF rules, checked at creation and at send time.

A user gives us a URL and we POST to it from inside the deployment, so a URL must
not reach what only the deployment can reach: loopback, private networks, link-local
(and the cloud metadata services there), carrier-grade NAT, multicast, reserved
space, and the IPv6 forms that embed such an IPv4 address (IPv4-mapped, 6to4,
Teredo, NAT64). A host is refused if ANY of its addresses is, since a client may
connect to any of them. ``allow_private_urls`` lifts the address rule (tests, local
development); the scheme and userinfo rules stay.

The check at creation is a courtesy (a clear 422); the one that protects is at send
time, in :mod:`mailsched.webhooks.transport`, which connects only to the addresses
it has just checked, so a DNS answer that changes in between cannot slip through.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import SplitResult, urlsplit

from mailsched.errors import UnsafeUrl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048

#: Seconds a name may take to resolve.
RESOLVE_TIMEOUT = 5.0

#: Cloud metadata services, refused even where their network is not otherwise
#: (AWS, GCP, Azure on 169.254.169.254; AWS over IPv6; Alibaba on 100.100.100.200).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse(url: str) -> SplitResult:
    """``url`` split, if it is an absolute http(s) URL with a host and no userinfo."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise UnsafeUrl("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("the scheme must be http or https")
    if not parts.hostname:
        raise UnsafeUrl("the URL names no host")
    if "@" in parts.netloc:
        raise UnsafeUrl("a URL with a user name or password is not accepted")
    if port == 0:
        raise UnsafeUrl("port 0 is not a port")
    return parts


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be called, or ``None`` if it is a public address."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = refusal(embedded)
            return None if reason is None else f"{reason} (embedded in IPv6)"
        if address.scope_id:
            return "a scoped (link-local) address"
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        # What is left and not global: carrier-grade NAT (100.64/10), documentation, …
        (not address.is_global, "not a public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@functools.cache
def _lookup_threads() -> ThreadPoolExecutor:
    """Threads for name lookups alone, made on first use. getaddrinfo blocks, so it
    runs off the loop; and a lookup stuck on a silent name server keeps its thread
    for up to ~30 s after we stop waiting, so it must not take one of the default
    executor's few threads, which template checks, SMTP and the outbox share."""
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="mailsched-dns")


async def resolve(host: str, port: int, allow_private: bool) -> list[IPAddress]:
    """The addresses of ``host``, every one checked; raise :class:`UnsafeUrl` if it does
    not resolve, or if any address is refused (unless ``allow_private``)."""
    literal = _literal(host)
    if literal is not None:
        found = [literal]
    else:
        loop = asyncio.get_running_loop()
        lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                infos = await loop.run_in_executor(_lookup_threads(), lookup)
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise UnsafeUrl(f"the host {host!r} does not resolve") from exc
        found = []
        for family, _type, _proto, _name, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = ipaddress.ip_address(sockaddr[0])
            if address not in found:
                found.append(address)
        if not found:
            raise UnsafeUrl(f"the host {host!r} has no IP address")
    if not allow_private:
        for address in found:
            reason = refusal(address)
            if reason is not None:
                raise UnsafeUrl(f"the host {host!r} resolves to {address}: {reason}")
    return found


async def check(url: str, allow_private: bool) -> None:
    """Raise :class:`UnsafeUrl` unless ``url`` may be called now (see the module docstring)."""
    parts = parse(url)
    assert parts.hostname is not None  # parse refuses a URL without one
    default = 443 if parts.scheme == "https" else 80
    await resolve(parts.hostname, parts.port or default, allow_private)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
