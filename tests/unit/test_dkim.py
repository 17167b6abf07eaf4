"""DKIM: letters signed by mailsched.mail.dkim verify with dkimpy; changes after signing fail."""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mailsched import cli
from mailsched.config import DkimKey, Settings, dkim_key
from mailsched.consumer.letters import LetterFactory
from mailsched.domain.model import Campaign, CampaignStatus
from mailsched.errors import ConfigError
from mailsched.mail.dkim import DkimSigner
from mailsched.mail.message import MessageTemplate, Unsubscribe
from tests.support.dkim_dns import DkimDns, signed_headers

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
UNSUBSCRIBE = Unsubscribe("https://mail.example.com/u/tok3n", "mailto:u+tok3n@example.com")
REQUIRED = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
]

KEYS: dict[str, Callable[[], DkimKey]] = {
    "rsa-2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.fixture(params=sorted(KEYS))
def key(request: pytest.FixtureRequest) -> DkimKey:
    return KEYS[request.param]()


def pem(key: object) -> bytes:
    assert isinstance(
        key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def messages() -> list[bytes]:
    """Real letters: plain and HTML, a UTF-8 subject, a templated body, unsubscribe links."""
    plain = MessageTemplate(1, "news@example.com", "Grüße aus Köln ✉", "Hallo,\nwie geht's?\n")
    html = MessageTemplate(
        2, "news@example.com", "Sale", "Text part\n" * 50, html_body="<p>Hi</p>" * 50
    )
    templated = MessageTemplate(
        3, "news@example.com", "Hi {{ name }}", "Your code: {{ code }}\n", templated=True
    )
    return [
        plain.render("ann@example.org", 7, NOW, unsubscribe=UNSUBSCRIBE),
        html.render("bob@example.org", 8, NOW, name="Bob B.", unsubscribe=UNSUBSCRIBE),
        templated.render(
            "cy@example.org", 9, NOW, name="Cy", variables={"code": "X1"}, unsubscribe=UNSUBSCRIBE
        ),
        plain.render("dee@example.org", 10, NOW),  # no links: absent headers are signed too
    ]


def signer_and_dns(key: DkimKey) -> tuple[DkimSigner, DkimDns]:
    dns = DkimDns()
    dns.publish("s2026", "example.com", key)
    return DkimSigner("example.com", "s2026", key), dns


def test_every_letter_verifies(key: DkimKey) -> None:
    signer, dns = signer_and_dns(key)
    for message in messages():
        signed = signer.sign(message)
        assert signed.startswith(b"DKIM-Signature: ")
        assert signed.endswith(message)
        assert dns.verify(signed)


def test_the_signature_covers_the_required_headers_each_once_more_than_present(
    key: DkimKey,
) -> None:
    signer, _ = signer_and_dns(key)
    with_links, *_, without_links = messages()
    # Each is listed once per occurrence and once more, so none can be added.
    assert signed_headers(signer.sign(with_links)) == [n for n in REQUIRED for _ in (1, 2)]
    assert signed_headers(signer.sign(without_links)) == [
        n for n in REQUIRED for _ in range(1 if n.startswith("list-") else 2)
    ]


def test_the_signature_is_relaxed_and_names_the_algorithm(key: DkimKey) -> None:
    signer, _ = signer_and_dns(key)
    header = signer.sign(messages()[0]).split(b"\r\nTo: ")[0]
    unfolded = re.sub(rb"\r\n\s+", b" ", header)
    algorithm = b"ed25519-sha256" if isinstance(key, ed25519.Ed25519PrivateKey) else b"rsa-sha256"
    assert b"a=" + algorithm + b";" in unfolded
    assert b"c=relaxed/relaxed;" in unfolded
    assert b"d=example.com;" in unfolded and b"s=s2026;" in unfolded


CHANGES: dict[str, Callable[[bytes], bytes]] = {
    "body": lambda m: m.replace(b"wie geht", b"wie gehts", 1),
    "subject": lambda m: re.sub(rb"Subject: [^\r]*", b"Subject: Win a prize", m, count=1),
    "to": lambda m: m.replace(b"To: ann@example.org", b"To: eve@example.org", 1),
    "from": lambda m: m.replace(b"From: news@example.com", b"From: ceo@example.com", 1),
    "date": lambda m: m.replace(b"Date: Sat", b"Date: Sun", 1),
    "message-id": lambda m: m.replace(b"<c1.d7@", b"<c1.d8@", 1),
    "list-unsubscribe": lambda m: m.replace(b"/u/tok3n", b"/u/evil", 1),
    "list-unsubscribe-post": lambda m: m.replace(b"=One-Click", b"=Two-Click", 1),
    "a second from": lambda m: b"From: ceo@example.com\r\n" + m,
    "an added subject": lambda m: m.replace(b"\r\n\r\n", b"\r\nSubject: second\r\n\r\n", 1),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_after_signing_fails(key: DkimKey, change: str) -> None:
    signer, dns = signer_and_dns(key)
    signed = signer.sign(messages()[0])
    changed = CHANGES[change](signed)
    assert changed != signed
    assert not dns.verify(changed)


def test_a_shared_body_is_hashed_once_and_still_verifies() -> None:
    signer, dns = signer_and_dns(ed25519.Ed25519PrivateKey.generate())
    plain = MessageTemplate(1, "news@example.com", "Hi", "Same body\n")
    for n in range(1, 40):  # more bodies than the signer keeps the hashes of
        other = MessageTemplate(n, "news@example.com", "Hi", f"Body {n}\n")
        for template in (plain, other):
            assert dns.verify(signer.sign(template.render(f"r{n}@example.org", n, NOW)))


#: A plain running campaign of user 42; each test changes what it needs.
CAMPAIGN = Campaign(
    id=1,
    user_id=42,
    subject="Hi",
    body="Short\n",
    start_time=NOW,
    delay_seconds=0,
    hourly_limit=10,
    status=CampaignStatus.RUNNING,
    recipient_count=1,
    slot_seq=0,
    created_at=NOW,
    completed_at=None,
)


async def test_the_letter_factory_signs_every_letter(key: DkimKey) -> None:
    signer, dns = signer_and_dns(key)
    factory = LetterFactory(
        "news@example.com", links=lambda user, address: UNSUBSCRIBE, sign=signer.sign
    )
    campaign = replace(
        CAMPAIGN, id=5, subject="Hi {{ name }}", body="Code {{ code }}\n", templated=True
    )
    for templated in (True, False):
        letter = await factory.build(
            replace(campaign, id=5 + templated, templated=templated),
            7,
            "ann@example.org",
            NOW,
            name="Ann",
            variables={"code": "A1"},
        )
        assert dns.verify(letter.data)
        assert signed_headers(letter.data) == [n for n in REQUIRED for _ in (1, 2)]


# Settings: all three or none, a readable key of a kind DKIM knows.


def dkim_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key_text: bytes | None) -> None:
    for name in list(os.environ):
        if name.startswith("MAILSCHED_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILSCHED_DKIM_DOMAIN", "example.com")
    monkeypatch.setenv("MAILSCHED_DKIM_SELECTOR", "s2026")
    if key_text is not None:
        (tmp_path / "dkim.pem").write_bytes(key_text)
        monkeypatch.setenv("MAILSCHED_DKIM_KEY_FILE", str(tmp_path / "dkim.pem"))


def test_good_settings_give_a_signer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    dkim_env(monkeypatch, tmp_path, pem(key))
    config = Settings.load().dkim()
    assert config is not None
    dns = DkimDns()
    dns.publish("s2026", "example.com", key)
    assert dns.verify(DkimSigner.from_config(config).sign(messages()[0]))


def test_no_dkim_settings_no_signer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dkim_env(monkeypatch, tmp_path, None)
    monkeypatch.delenv("MAILSCHED_DKIM_DOMAIN")
    monkeypatch.delenv("MAILSCHED_DKIM_SELECTOR")
    assert Settings.load().dkim() is None


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("MAILSCHED_DKIM_KEY_FILE", "MAILSCHED_DKIM_KEY_FILE"),
        ("MAILSCHED_DKIM_DOMAIN", "MAILSCHED_DKIM_DOMAIN"),
        ("MAILSCHED_DKIM_SELECTOR", "MAILSCHED_DKIM_SELECTOR"),
    ],
)
def test_a_missing_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str, named: str
) -> None:
    dkim_env(monkeypatch, tmp_path, pem(ed25519.Ed25519PrivateKey.generate()))
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigError, match=f"^{named}:"):
        Settings.load()


BAD_KEYS: dict[str, bytes] = {
    "not PEM": b"hello\n",
    "a public key": ed25519.Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    "RSA-1024": pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
    "an EC key": pem(ec.generate_private_key(ec.SECP256R1())),
}


@pytest.mark.parametrize("kind", sorted(BAD_KEYS))
def test_a_bad_key_file_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str
) -> None:
    dkim_env(monkeypatch, tmp_path, BAD_KEYS[kind])
    with pytest.raises(ConfigError, match=r"^MAILSCHED_DKIM_KEY_FILE:"):
        Settings.load()


def test_an_unreadable_key_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dkim_env(monkeypatch, tmp_path, None)
    monkeypatch.setenv("MAILSCHED_DKIM_KEY_FILE", str(tmp_path / "absent.pem"))
    with pytest.raises(ConfigError, match=r"^MAILSCHED_DKIM_KEY_FILE: cannot read"):
        Settings.load()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILSCHED_DKIM_HEADERS", "To:Subject"),
        ("MAILSCHED_DKIM_HEADERS", "From:DKIM-Signature"),
        ("MAILSCHED_DKIM_HEADERS", "From:Bad Name"),
        ("MAILSCHED_DKIM_DOMAIN", "exa mple.com"),
        ("MAILSCHED_DKIM_SELECTOR", "s;1"),
    ],
)
def test_a_bad_value_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    dkim_env(monkeypatch, tmp_path, pem(ed25519.Ed25519PrivateKey.generate()))
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name}:"):
        Settings.load()


def test_the_process_stops_with_status_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dkim_env(monkeypatch, tmp_path, b"not a key")
    assert cli.main(["worker"]) == 2
    assert "MAILSCHED_DKIM_KEY_FILE" in capsys.readouterr().err


def test_dkim_key_accepts_traditional_rsa_pem() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    text = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "BEGIN RSA PRIVATE KEY"
        serialization.NoEncryption(),
    )
    assert isinstance(dkim_key(text), rsa.RSAPrivateKey)


# mailsched dkim keygen


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_keygen_record_verifies_what_its_key_signs(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    algorithm: str,
) -> None:
    dkim_env(monkeypatch, tmp_path, None)
    out = tmp_path / "new.pem"
    argv = ["dkim", "keygen", "--algorithm", algorithm, "--out", str(out)]
    assert cli.main(argv) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    line = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.fullmatch(r'(\S+)\. TXT ((?:"[^"]{1,255}" ?)+)', line)
    assert found is not None, line
    assert found[1] == "s2026._domainkey.example.com"
    value = "".join(re.findall(r'"([^"]*)"', found[2]))
    assert value.startswith(f"v=DKIM1; k={algorithm}; p=")
    if algorithm == "rsa":
        assert found[2].count('"') == 4  # an RSA-2048 key takes two strings

    dns = DkimDns()
    dns.publish_record("s2026", "example.com", value)
    signer = DkimSigner("example.com", "s2026", dkim_key(out.read_bytes()))
    assert dns.verify(signer.sign(messages()[1]))
    # An existing key is never overwritten.
    assert cli.main(argv) == 1
    assert dkim_key(out.read_bytes()) is not None


async def test_only_large_or_templated_letters_are_signed_in_the_thread() -> None:
    # Fails if a plain letter's signature leaves the event loop (measured slower) or
    # a large body is hashed on it (86 ms for 2 MB).
    threads: list[str] = []

    def sign(message: bytes) -> bytes:
        threads.append(threading.current_thread().name)
        return message

    factory = LetterFactory("news@example.com", sign=sign)
    small = CAMPAIGN
    large = replace(small, id=2, body="Long line of text\n" * 10_000)
    templated = replace(small, id=3, body="Hi {{ name }}\n", templated=True)
    for campaign in (small, large, templated):
        await factory.build(campaign, 7, "ann@example.org", NOW, name="Ann")
    assert threads[0] == threading.current_thread().name
    assert threads[1].startswith("letters") and threads[2].startswith("letters")
