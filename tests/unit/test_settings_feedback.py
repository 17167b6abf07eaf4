"""The bounce settings refuse what would be unsafe or break later."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailsched.config import Settings
from mailsched.errors import ConfigError


def test_an_ses_certificate_needs_its_topics(tmp_path: Path) -> None:
    # SNS signs every AWS account's topics with the same certificate.
    certificate = tmp_path / "sns.pem"
    certificate.write_text("-----BEGIN CERTIFICATE-----\n", encoding="ascii")
    with pytest.raises(ConfigError, match=r"^MAILSCHED_SES_TOPIC_ARNS: required"):
        Settings(ses_certificate_file=certificate).providers()
    arn = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
    config = Settings(ses_certificate_file=certificate, ses_topic_arns=arn).providers()
    assert config.ses_topic_arns == (arn,)


def test_the_check_runs_when_the_settings_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate = tmp_path / "sns.pem"
    certificate.write_text("-----BEGIN CERTIFICATE-----\n", encoding="ascii")
    monkeypatch.setenv("MAILSCHED_SES_CERTIFICATE_FILE", str(certificate))
    with pytest.raises(ConfigError, match=r"^MAILSCHED_SES_TOPIC_ARNS: required"):
        Settings.load()


def test_a_bounce_suppression_lasts_at_most_a_century(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSCHED_BOUNCE_SUPPRESSION_DAYS", "36501")
    with pytest.raises(ConfigError, match="MAILSCHED_BOUNCE_SUPPRESSION_DAYS"):
        Settings.load()
    monkeypatch.setenv("MAILSCHED_BOUNCE_SUPPRESSION_DAYS", "36500")
    assert Settings.load().feedback().bounce_suppression is not None
