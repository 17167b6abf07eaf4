"""The SSRF rules as a table: which addresses and URLs a webhook may reach."""

from __future__ import annotations

import ipaddress

import pytest

from mailsched.webhooks import urls


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "not a public address"),
        ("100.100.100.200", "metadata"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "private"),
        ("255.255.255.255", "private"),
        ("192.0.2.1", "private"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd00:ec2::254", "metadata"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback address (embedded in IPv6)"),
        ("::ffff:10.1.2.3", "private address (embedded in IPv6)"),
        ("::ffff:169.254.169.254", "metadata address (embedded in IPv6)"),
        ("2002:7f00:1::", "loopback address (embedded in IPv6)"),
        ("2002:a9fe:a9fe::", "metadata address (embedded in IPv6)"),
        ("64:ff9b::a00:1", "private address (embedded in IPv6)"),
    ],
)
def test_refused(address: str, why: str) -> None:
    reason = urls.refusal(ipaddress.ip_address(address))
    assert reason is not None
    assert why in reason


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public(address: str) -> None:
    assert urls.refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com/", "scheme"),
        ("example.com/hook", "scheme"),
        ("http:///hook", "no host"),
        ("http://user@example.com/", "user name"),
        ("http://user:pw@example.com/", "user name"),
        ("http://example.com:0/", "port 0"),
        ("http://example.com:70000/", "not a valid URL"),
        ("http://exa mple.com/", "spaces"),
        ("http://example.com/\r\nX-Evil: 1", "control"),
        ("http://example.com/" + "a" * 2048, "at most"),
    ],
)
def test_unparsable_or_refused_urls(url: str, why: str) -> None:
    with pytest.raises(urls.UnsafeUrl, match=why):
        urls.parse(url)


@pytest.mark.parametrize(
    "url", ["http://example.com/hook", "https://example.com:8443/a?b=c", "http://[2606::1]/"]
)
def test_good_urls_parse(url: str) -> None:
    assert urls.parse(url).hostname


async def test_a_name_is_refused_if_any_address_is() -> None:
    with pytest.raises(urls.UnsafeUrl, match="loopback"):
        await urls.resolve("localhost", 80, allow_private=False)
    assert await urls.resolve("localhost", 80, allow_private=True)


async def test_literals_are_checked_without_dns() -> None:
    with pytest.raises(urls.UnsafeUrl, match="loopback"):
        await urls.check("http://[::1]:8080/", allow_private=False)
    await urls.check("http://[::1]:8080/", allow_private=True)
    await urls.check("https://93.184.215.14/", allow_private=False)


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(urls.UnsafeUrl, match="does not resolve"):
        await urls.check("https://no-such-host.invalid/", allow_private=True)
