"""Settings: read from ``MAILSCHED_*`` environment variables once, at start, and validated.

Each adapter gets only its own part (:class:`SmtpConfig`, :class:`KafkaConfig`, …),
built here so that a malformed value stops the process before anything starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailsched.domain import shaping
from mailsched.domain.shaping import Shaping
from mailsched.errors import ConfigError

SmtpSecurity = Literal["plain", "starttls", "tls"]
DkimKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+")

_SMTP_SCHEMES: dict[str, tuple[SmtpSecurity, int]] = {
    "smtp": ("plain", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("tls", 465),
}


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how to reach one SMTP relay."""

    host: str
    port: int
    security: SmtpSecurity
    username: str | None
    password: str | None
    connections: int
    timeout: float
    #: How the relay is called in the deliveries listing, the logs and the metrics.
    name: str = ""
    #: At most this many messages a second through this relay, per worker process.
    max_per_second: float | None = None
    #: At most this many messages in any 24 hours through this relay, per worker process.
    max_per_day: int | None = None

    @classmethod
    def from_url(cls, url: str, connections: int = 8, timeout: float = 30.0) -> SmtpConfig:
        """Parse ``smtp://``, ``smtp+starttls://user:pass@host:587`` or ``smtps://…``, with
        optional query parameters ``connections``, ``max_per_second``, ``max_per_day``,
        ``timeout`` and ``name``."""
        # The messages below never quote the URL: it may hold a password.
        parts = urlsplit(url)
        if parts.scheme not in _SMTP_SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(_SMTP_SCHEMES)}")
        security, default_port = _SMTP_SCHEMES[parts.scheme]
        if "@" in parts.query + parts.path + parts.fragment:
            raise ValueError(_RESERVED)
        if not parts.hostname:
            raise ValueError("the URL names no host")
        try:
            port = default_port if parts.port is None else parts.port
        except ValueError:
            raise ValueError(f"the port is not a number from 1 to 65535; {_RESERVED}") from None
        if not port:
            raise ValueError(f"the port is not a number from 1 to 65535; {_RESERVED}")
        if parts.path not in ("", "/") or parts.fragment:
            raise ValueError("an SMTP URL has no path or fragment")
        params = _relay_params(parts.query)
        return cls(
            host=parts.hostname,
            port=port,
            security=security,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            connections=int(params.get("connections", connections)),
            timeout=float(params.get("timeout", timeout)),
            name=str(params.get("name", f"{parts.hostname}:{port}")),
            max_per_second=(
                float(params["max_per_second"]) if "max_per_second" in params else None
            ),
            max_per_day=int(params["max_per_day"]) if "max_per_day" in params else None,
        )


def relays_from(text: str, connections: int = 8, timeout: float = 30.0) -> tuple[SmtpConfig, ...]:
    """The relays of ``MAILSCHED_SMTP_URL``: URLs separated by whitespace, in order of
    preference. A bad one raises :class:`ValueError` naming its position."""
    urls = text.split()
    found: list[SmtpConfig] = []
    for i, url in enumerate(urls, 1):
        where = f"URL {i} of {len(urls)}" if len(urls) > 1 else "the URL"
        if "://" not in url:
            raise ValueError(f"{where} has no scheme such as smtp://; {_RESERVED}")
        try:
            found.append(SmtpConfig.from_url(url, connections, timeout))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    names = [relay.name for relay in found]
    if len(set(names)) < len(names):
        raise ValueError(
            "two relays have the same name; give each its own with ?name=, "
            f"names: {', '.join(names)}"
        )
    return tuple(found)


_RESERVED = (
    "in a user name or password, percent-encode @ : / ? # and spaces (%40 %3A %2F %3F %23 %20)"
)

#: Query parameters an SMTP URL may carry, with each one's type and bounds.
_RELAY_PARAMS: dict[str, tuple[type, float, float]] = {
    "connections": (int, 1, 256),
    "max_per_second": (float, 0.001, 1_000_000),
    "max_per_day": (int, 1, 1_000_000_000),
    "timeout": (float, 0.1, 3600),
}
_RELAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def _relay_params(query: str) -> dict[str, int | float | str]:
    params: dict[str, int | float | str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError("the query is not name=value pairs joined by &") from None
    for key, value in pairs:
        if key in params:
            raise ValueError(f"{key} is given twice")
        if key == "name":
            if not _RELAY_NAME.fullmatch(value):
                raise ValueError("name must be 1-64 letters, digits, '.', '_', ':' or '-'")
            params[key] = value
            continue
        if key not in _RELAY_PARAMS:
            known = ", ".join(["name", *_RELAY_PARAMS])
            raise ValueError(f"unknown parameter {key!r} (known: {known})")
        kind, low, high = _RELAY_PARAMS[key]
        try:
            number = kind(value)
        except ValueError:
            raise ValueError(f"{key} must be a number") from None
        if not low <= number <= high:
            raise ValueError(f"{key} must be between {low:g} and {high:g}")
        params[key] = number
    return params


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """The Kafka queue: brokers, topics and the consumer group."""

    bootstrap_servers: str
    topic: str
    partitions: int
    dead_letter_topic: str
    group_id: str
    replication_factor: int

    @property
    def behind_topic(self) -> str:
        """The topic of the behind lane (:class:`mailsched.queue.Lane`): ``topic`` + ``.behind``."""
        return f"{self.topic}.behind"

    @property
    def behind_group_id(self) -> str:
        """The workers' consumer group on the behind lane's topic."""
        return f"{self.group_id}.behind"


#: The default of :attr:`DispatcherConfig.behind_after`.
BEHIND_AFTER = timedelta(seconds=0.25)


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    """How the dispatcher moves due deliveries to the queue."""

    interval: float
    lookahead: timedelta
    batch_size: int
    requeue_after: timedelta
    reap_interval: float
    #: A delivery planned this long before the pass that claims it is behind its plan,
    #: and travels on the behind lane (:class:`mailsched.queue.Lane`). Deliveries come
    #: a look-ahead early when the dispatcher keeps up; this catches those created
    #: due at once, which a pass claims within milliseconds of their creation.
    behind_after: timedelta = BEHIND_AFTER
    #: A campaign with more deliveries than this in one pass is a crowd, and goes on
    #: the behind lane whole, so that a big campaign due now cannot fill the on-time
    #: lane ahead of every other campaign's next email.
    crowd: int = 50


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker claims, sends and records."""

    batch_size: int
    inflight_batches: int
    lease: timedelta
    hold: timedelta
    max_attempts: int
    retry_base: timedelta
    retry_cap: timedelta
    shutdown_grace: float
    #: How far ahead of its time a delivery may be claimed, to be sent at its time.
    ahead: timedelta = timedelta(0)


#: Seconds between a webhook's attempts: from seconds (a receiver's short hiccup
#: costs seconds) to hours, about three days in all (Svix's schedule, started sooner).
DEFAULT_WEBHOOK_RETRY_SCHEDULE = (
    "5,30,120,600,1800,3600,7200,14400,28800,43200,43200,43200,43200,43200"
)


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """The events outbox: how long events are kept, and where the relay publishes them."""

    retention: timedelta
    #: The Kafka topic of events (production stack only).
    topic: str
    relay_batch_size: int
    relay_interval: float


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    """What bounces and complaints do (``mailsched.inbound``)."""

    #: Soft bounces in a row, across campaigns, after which an address is suppressed.
    soft_bounce_limit: int
    #: How long a bounce's suppression lasts; ``None``: for ever.
    bounce_suppression: timedelta | None
    #: The circuit breaker: a campaign pauses by itself past these rates, once it
    #: has made at least ``breaker_min_sends`` sends.
    breaker_min_sends: int
    breaker_bounce_rate: float
    breaker_complaint_rate: float


@dataclass(frozen=True, slots=True)
class InboundConfig:
    """The bounce mailbox's SMTP server, ``mailsched inbound``."""

    #: The VERP return path's base, ``bounces@bounce.example.com``.
    bounce_address: str
    host: str
    port: int
    max_message_bytes: int
    max_connections: int

    @property
    def domain(self) -> str:
        """The bounce domain: mail for any other is refused."""
        return self.bounce_address.rsplit("@", 1)[1].lower()


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """The credentials that authenticate each provider's event webhook at
    ``POST /inbound/{provider}``; a provider without them is refused (401)."""

    #: SendGrid's verification key: the base64 DER of its ECDSA P-256 public key.
    sendgrid_public_key: str | None
    #: Mailgun's HTTP webhook signing key.
    mailgun_signing_key: str | None
    #: The basic-auth user and password set on Postmark's webhook URL.
    postmark_user: str | None
    postmark_password: str | None
    #: The PEM of the certificate Amazon SNS signs with (never fetched at run time),
    #: and the topic ARNs accepted.
    ses_certificate: str | None
    ses_topic_arns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """How webhooks are delivered."""

    #: Seconds to wait before each retry: ``retry_schedule[n]`` after the n-th failure.
    retry_schedule: tuple[float, ...]
    timeout: float
    allow_private_urls: bool
    #: The Kafka consumer group of ``mailsched webhooks``.
    group_id: str
    #: Requests in flight at once, over all endpoints.
    concurrency: int
    #: How many events one request of a batching endpoint carries.
    max_batch: int


@dataclass(frozen=True, slots=True)
class DkimConfig:
    """Who signs (``d=``, ``s=``), with which private key, and which headers."""

    domain: str
    selector: str
    key: DkimKey
    headers: tuple[str, ...]


#: What MAILSCHED_DKIM_HEADERS defaults to: what a reader sees and what the
#: one-click unsubscribe (RFC 8058) requires to be signed.
DEFAULT_DKIM_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)
_DKIM_SETTINGS = ("MAILSCHED_DKIM_DOMAIN", "MAILSCHED_DKIM_SELECTOR", "MAILSCHED_DKIM_KEY_FILE")
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_DKIM_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class Settings(BaseSettings):
    """Every setting mailsched reads, each from ``MAILSCHED_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MAILSCHED_", extra="ignore", frozen=True)

    database_url: str = "sqlite:///./mailsched.db"
    smtp_url: SecretStr | None = None
    smtp_connections: int = Field(8, ge=1, le=256)
    smtp_timeout_seconds: float = Field(30.0, gt=0)
    smtp_probe_seconds: float = Field(30.0, gt=0, le=86_400)
    outbox_dir: Path = Path("./outbox")
    from_: str = Field("mailsched@localhost", alias="MAILSCHED_FROM")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    rate_window_seconds: float = Field(3600.0, gt=0)
    #: How long after a send starts the plan expects the server's answer: the room the
    #: plan leaves in each gap and window (see :meth:`mailsched.domain.plan.Rules.planned`).
    plan_margin_seconds: float = Field(0.1, ge=0, le=60)

    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = "mailsched.deliveries"
    kafka_partitions: int = Field(12, ge=1)
    kafka_dead_letter_topic: str = "mailsched.deliveries.dlq"
    kafka_group_id: str = "mailsched-workers"
    kafka_replication_factor: int = Field(1, ge=1)

    dispatch_interval_seconds: float = Field(0.25, gt=0)
    dispatch_lookahead_seconds: float = Field(1.0, ge=0)
    dispatch_batch_size: int = Field(1000, ge=1, le=10000)
    requeue_after_seconds: float = Field(300.0, gt=0)

    worker_batch_size: int = Field(200, ge=1, le=5000)
    worker_inflight_batches: int = Field(4, ge=1, le=64)
    lease_seconds: float = Field(120.0, gt=0)
    hold_seconds: float = Field(2.0, ge=0)
    claim_ahead_seconds: float = Field(0.9, ge=0, lt=1)
    max_attempts: int = Field(5, ge=1)
    retry_base_seconds: float = Field(30.0, gt=0)
    retry_cap_seconds: float = Field(3600.0, gt=0)
    shutdown_grace_seconds: float = Field(30.0, gt=0)

    public_url: str | None = None
    secret_key: SecretStr | None = None
    max_recipients: int = Field(10_000_000, ge=1)
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_body_bytes: int = Field(1024 * 1024, ge=1)
    requests_per_minute: int = Field(600, ge=1)

    event_retention_days: float = Field(30.0, gt=0)
    kafka_events_topic: str = "mailsched.events"
    webhook_retry_schedule: str = DEFAULT_WEBHOOK_RETRY_SCHEDULE
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=60)
    webhook_allow_private_urls: bool = False
    webhook_group_id: str = "mailsched-webhooks"
    webhook_concurrency: int = Field(32, ge=1, le=1024)

    bounce_address: str | None = None
    inbound_host: str = "127.0.0.1"
    inbound_port: int = Field(2526, ge=0, le=65535)
    inbound_max_message_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    inbound_max_connections: int = Field(64, ge=1, le=10_000)
    soft_bounce_limit: int = Field(3, ge=1, le=100)
    bounce_suppression_days: float | None = Field(None, gt=0, le=36_500)
    breaker_min_sends: int = Field(100, ge=1)
    breaker_bounce_rate: float = Field(0.05, gt=0, le=1)
    breaker_complaint_rate: float = Field(0.003, gt=0, le=1)
    sendgrid_public_key: SecretStr | None = None
    mailgun_signing_key: SecretStr | None = None
    postmark_webhook_user: str | None = None
    postmark_webhook_password: SecretStr | None = None
    ses_certificate_file: Path | None = None
    ses_topic_arns: str = ""

    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_key_file: Path | None = None
    dkim_headers: str = ":".join(DEFAULT_DKIM_HEADERS)

    shaping_file: Path | None = None

    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0, le=65535)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("from_")
    @classmethod
    def _from_is_an_address(cls, value: str) -> str:
        # Operators legitimately send from special-use domains in development
        # (mailsched@localhost), so this checks the shape, not deliverability.
        if not _ADDRESS.fullmatch(value):
            raise ValueError("must be a plain address such as news@example.com")
        return value

    @field_validator("bounce_address")
    @classmethod
    def _bounce_address_is_an_address(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not _ADDRESS.fullmatch(value) or "+" in value.split("@", 1)[0]:
            raise ValueError(
                "must be a plain address without '+', such as bounces@bounce.example.com"
            )
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            relays_from(value.get_secret_value())
            return value
        return None

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule_parses(cls, value: str) -> str:
        retry_schedule(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_known(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "mysql", "mariadb"):
            raise ValueError("must start with sqlite://, mysql:// or mariadb://")
        return value

    @field_validator("dkim_domain", "dkim_selector")
    @classmethod
    def _dkim_names(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not all(_DKIM_LABEL.fullmatch(label) for label in value.split(".")):
            raise ValueError("must be ASCII DNS labels separated by dots, such as example.com")
        return value

    @field_validator("dkim_headers")
    @classmethod
    def _dkim_headers(cls, value: str) -> str:
        names = [name.strip() for name in value.split(":")]
        if not all(_HEADER_NAME.fullmatch(name) for name in names):
            raise ValueError("must be header names separated by colons, such as From:To:Subject")
        if "from" not in {name.lower() for name in names}:
            raise ValueError("must include From (RFC 6376)")
        if "dkim-signature" in {name.lower() for name in names}:
            raise ValueError("may not include DKIM-Signature")
        return value

    @classmethod
    def load(cls, *, check_dkim: bool = True) -> Settings:
        """Read the environment once; a bad value raises :class:`ConfigError` naming it.
        With ``check_dkim``, the DKIM key file is read and checked too."""
        try:
            settings = cls()
        except ValidationError as exc:
            problems = "; ".join(f"{_variable(err['loc'])}: {err['msg']}" for err in exc.errors())
            raise ConfigError(problems) from exc
        if check_dkim:
            settings.dkim()  # the key file is read and checked now, not at the first send
        settings.shaping()  # so is the shaping file
        settings.providers()  # the SES certificate too, and that its topics are named
        return settings

    @property
    def base_url(self) -> str:
        """Where recipients reach this deployment's public routes (unsubscribe links)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def rate_window(self) -> timedelta:
        return timedelta(seconds=self.rate_window_seconds)

    @property
    def plan_margin(self) -> timedelta:
        return timedelta(seconds=self.plan_margin_seconds)

    def relays(self) -> tuple[SmtpConfig, ...]:
        """The SMTP relays in order of preference; none means ``.eml`` files."""
        if self.smtp_url is None:
            return ()
        return relays_from(
            self.smtp_url.get_secret_value(), self.smtp_connections, self.smtp_timeout_seconds
        )

    def kafka(self) -> KafkaConfig | None:
        """The Kafka queue's configuration, or ``None`` for the in-process queue."""
        if not self.kafka_bootstrap_servers:
            return None
        return KafkaConfig(
            bootstrap_servers=self.kafka_bootstrap_servers,
            topic=self.kafka_topic,
            partitions=self.kafka_partitions,
            dead_letter_topic=self.kafka_dead_letter_topic,
            group_id=self.kafka_group_id,
            replication_factor=self.kafka_replication_factor,
        )

    def events(self) -> EventsConfig:
        return EventsConfig(
            retention=timedelta(days=self.event_retention_days),
            topic=self.kafka_events_topic,
            relay_batch_size=1000,
            relay_interval=0.2,
        )

    def webhooks(self) -> WebhookConfig:
        return WebhookConfig(
            retry_schedule=retry_schedule(self.webhook_retry_schedule),
            timeout=self.webhook_timeout_seconds,
            allow_private_urls=self.webhook_allow_private_urls,
            group_id=self.webhook_group_id,
            concurrency=self.webhook_concurrency,
            max_batch=500,
        )

    def feedback(self) -> FeedbackConfig:
        days = self.bounce_suppression_days
        return FeedbackConfig(
            soft_bounce_limit=self.soft_bounce_limit,
            bounce_suppression=None if days is None else timedelta(days=days),
            breaker_min_sends=self.breaker_min_sends,
            breaker_bounce_rate=self.breaker_bounce_rate,
            breaker_complaint_rate=self.breaker_complaint_rate,
        )

    def inbound(self) -> InboundConfig | None:
        """The bounce mailbox, or ``None`` without ``MAILSCHED_BOUNCE_ADDRESS``."""
        if self.bounce_address is None:
            return None
        return InboundConfig(
            bounce_address=self.bounce_address,
            host=self.inbound_host,
            port=self.inbound_port,
            max_message_bytes=self.inbound_max_message_bytes,
            max_connections=self.inbound_max_connections,
        )

    def providers(self) -> ProviderConfig:
        """Reads ``MAILSCHED_SES_CERTIFICATE_FILE`` (a :class:`ConfigError` if unreadable)."""
        certificate = None
        if self.ses_certificate_file is not None and not self.ses_topic_arns.split():
            # SNS signs every AWS account's topics with the same certificate: without
            # a list of topics, anyone's topic could post bounces here.
            raise ConfigError(
                "MAILSCHED_SES_TOPIC_ARNS: required with MAILSCHED_SES_CERTIFICATE_FILE "
                "(the ARNs of your SES notification topics, separated by spaces)"
            )
        if self.ses_certificate_file is not None:
            try:
                certificate = self.ses_certificate_file.read_text(encoding="ascii")
            except (OSError, UnicodeError) as exc:
                raise ConfigError(f"MAILSCHED_SES_CERTIFICATE_FILE: cannot read it: {exc}") from exc

        def secret(value: SecretStr | None) -> str | None:
            return None if value is None else value.get_secret_value() or None

        return ProviderConfig(
            sendgrid_public_key=secret(self.sendgrid_public_key),
            mailgun_signing_key=secret(self.mailgun_signing_key),
            postmark_user=self.postmark_webhook_user or None,
            postmark_password=secret(self.postmark_webhook_password),
            ses_certificate=certificate,
            ses_topic_arns=tuple(a for a in self.ses_topic_arns.split() if a),
        )

    def dkim(self) -> DkimConfig | None:
        """The DKIM signer's settings, or ``None`` when none of the three is set; reads
        MAILSCHED_DKIM_KEY_FILE. A :class:`ConfigError` names what is missing or wrong."""
        values = (self.dkim_domain, self.dkim_selector, self.dkim_key_file)
        if all(value is None for value in values):
            return None
        missing = [name for name, value in zip(_DKIM_SETTINGS, values, strict=True) if not value]
        if missing:
            raise ConfigError(
                f"{missing[0]}: DKIM needs all of {', '.join(_DKIM_SETTINGS)}; "
                f"{', '.join(missing)} not set"
            )
        assert self.dkim_domain and self.dkim_selector and self.dkim_key_file
        try:
            key_pem = self.dkim_key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"MAILSCHED_DKIM_KEY_FILE: cannot read it: {exc}") from exc
        return DkimConfig(
            domain=self.dkim_domain,
            selector=self.dkim_selector,
            key=dkim_key(key_pem),
            headers=tuple(name.strip() for name in self.dkim_headers.split(":")),
        )

    def shaping(self) -> Shaping:
        """The groups of MAILSCHED_SHAPING_FILE (none without one); a :class:`ConfigError`
        names the line or the key of a bad one."""
        if self.shaping_file is None:
            return Shaping()
        where = f"MAILSCHED_SHAPING_FILE ({self.shaping_file.name})"
        try:
            text = self.shaping_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read it: {exc}") from exc
        try:
            return shaping.parse(text, self.from_.rpartition("@")[2])
        except shaping.ShapingError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    def dispatcher(self) -> DispatcherConfig:
        return DispatcherConfig(
            interval=self.dispatch_interval_seconds,
            lookahead=timedelta(seconds=self.dispatch_lookahead_seconds),
            batch_size=self.dispatch_batch_size,
            requeue_after=timedelta(seconds=self.requeue_after_seconds),
            reap_interval=max(1.0, min(30.0, self.requeue_after_seconds / 4)),
        )

    def worker(self) -> WorkerConfig:
        return WorkerConfig(
            batch_size=self.worker_batch_size,
            inflight_batches=self.worker_inflight_batches,
            lease=timedelta(seconds=self.lease_seconds),
            hold=timedelta(seconds=self.hold_seconds),
            ahead=timedelta(seconds=min(self.claim_ahead_seconds, self.hold_seconds)),
            max_attempts=self.max_attempts,
            retry_base=timedelta(seconds=self.retry_base_seconds),
            retry_cap=timedelta(seconds=self.retry_cap_seconds),
            shutdown_grace=self.shutdown_grace_seconds,
        )


def dkim_key(pem: bytes) -> DkimKey:
    """The private key in ``pem``: RSA of at least 2048 bits, or Ed25519; a
    :class:`ConfigError` naming MAILSCHED_DKIM_KEY_FILE otherwise."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"MAILSCHED_DKIM_KEY_FILE: not an unencrypted PEM private key: {exc}"
        ) from exc
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigError(
                f"MAILSCHED_DKIM_KEY_FILE: an RSA key of {key.key_size} bits; "
                "DKIM needs at least 2048 (RFC 8301)"
            )
        return key
    raise ConfigError(
        f"MAILSCHED_DKIM_KEY_FILE: a {type(key).__name__}; DKIM needs an RSA or Ed25519 key"
    )


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable of a field (``from_`` is read from its alias)."""
    name = "_".join(str(p) for p in loc).upper().rstrip("_")
    return name if name.startswith("MAILSCHED_") else f"MAILSCHED_{name}"


def retry_schedule(text: str) -> tuple[float, ...]:
    """``"5,30,120"`` as seconds; at least one, each positive."""
    try:
        steps = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError("must be seconds separated by commas, such as 5,30,120") from None
    if not all(0 < step <= 7 * 86400 for step in steps):
        raise ValueError("each step must be more than 0 and at most 604800 seconds")
    return steps
