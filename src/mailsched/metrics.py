"""Prometheus metrics: one registry per process, made by :func:`mailsched.bootstrap.build`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mailsched.domain.model import DeliveryStatus, SendOutcome

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600)
#: What the bounce mailbox did with a message, for one recipient (see inbound/mailbox.py).
INBOUND_OUTCOMES = (
    "bounced",
    "complained",
    "soft",
    "recorded",
    "unknown_delivery",
    "unrecognised",
    "unreadable",
    "forged",
    "no_token",
    "refused_relay",
    "too_large",
    "error",
)


class Metrics:
    """Every metric mailsched exports, registered on its own registry (not the global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.deliveries = Gauge(
            "mailsched_deliveries",
            "Deliveries by status (sampled by the dispatcher)",
            ["status"],
            registry=r,
        )
        self.sends = Counter(
            "mailsched_sends_total", "Send attempts by outcome", ["outcome"], registry=r
        )
        self.send_seconds = Histogram(
            "mailsched_send_seconds",
            "Time for one SMTP transaction",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lateness = Histogram(
            "mailsched_lateness_seconds",
            "Actual send start minus the first planned time (first attempts only; a "
            "re-plan does not reset it)",
            buckets=_LATENESS_BUCKETS,
            registry=r,
        )
        self.smtp_replies = Counter(
            "mailsched_smtp_replies_total",
            "SMTP outcomes by reply class (2xx, 4xx, 5xx, none)",
            ["reply_class"],
            registry=r,
        )
        self.retries = Counter(
            "mailsched_retries_total", "Deliveries scheduled for another attempt", registry=r
        )
        self.queue_lag = Histogram(
            "mailsched_queue_lag_seconds",
            "From publish by the dispatcher to receipt by a worker",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lease_takeovers = Counter(
            "mailsched_lease_takeovers_total",
            "Deliveries taken back from a worker whose lease ran out",
            registry=r,
        )
        self.possible_duplicates = Counter(
            "mailsched_possible_duplicates_total",
            "Sends that may have reached the server before the worker could record them",
            registry=r,
        )
        self.requeued = Counter(
            "mailsched_requeued_total",
            "Queue messages presumed lost and dispatched again",
            registry=r,
        )
        self.dispatched = Counter(
            "mailsched_dispatched_total",
            "Deliveries moved to the queue, by lane (on_time, behind)",
            ["lane"],
            registry=r,
        )
        self.replans = Counter(
            "mailsched_replans_total",
            "Campaigns planned again (fell behind or slowed down)",
            registry=r,
        )
        self.events = Counter(
            "mailsched_events_total", "Events written, by type", ["type"], registry=r
        )
        self.relay_lag = Gauge(
            "mailsched_event_relay_lag_seconds",
            "Age of the oldest event the relay has not yet published (0 when caught up)",
            registry=r,
        )
        self.relayed = Counter(
            "mailsched_events_relayed_total", "Events the relay published", registry=r
        )
        self.webhook_attempts = Counter(
            "mailsched_webhook_attempts_total",
            "Webhook requests by result (2xx, 3xx, 4xx, 5xx, timeout, error)",
            ["status_class"],
            registry=r,
        )
        self.webhook_given_up = Counter(
            "mailsched_webhook_given_up_total",
            "Events whose webhook was given up after the last retry",
            registry=r,
        )
        self.webhook_seconds = Histogram(
            "mailsched_webhook_seconds",
            "Time for one webhook request",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.webhook_backlog = Gauge(
            "mailsched_webhook_backlog",
            "Webhook messages waiting to be delivered, by endpoint",
            ["endpoint"],
            registry=r,
        )
        self.webhook_oldest_seconds = Gauge(
            "mailsched_webhook_oldest_undelivered_seconds",
            "Age of the oldest event not yet delivered to its endpoint (0 when none)",
            registry=r,
        )
        self.inbound_messages = Counter(
            "mailsched_inbound_messages_total",
            "Messages (one per recipient) the bounce mailbox took or refused, by outcome",
            ["outcome"],
            registry=r,
        )
        self.inbound_seconds = Histogram(
            "mailsched_inbound_seconds",
            "Time to read and apply one inbound message, after its data arrived",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inbound_refused_connections = Counter(
            "mailsched_inbound_refused_connections_total",
            "Connections to the bounce mailbox refused (421) beyond the connection limit",
            registry=r,
        )
        self.relay_sends = Counter(
            "mailsched_relay_sends_total",
            "Letters handed to each SMTP relay, by result (accepted, refused: the letter's "
            "own error, unavailable: the relay took nothing and the letter moved on)",
            ["relay", "result"],
            registry=r,
        )
        self.relay_up = Gauge(
            "mailsched_relay_up",
            "1 while an SMTP relay takes mail, 0 while it is down and waits for its probe",
            ["relay"],
            registry=r,
        )
        self.shaping_held = Counter(
            "mailsched_shaping_held_total",
            "Deliveries a shaping group held back (full, or suspended), by group",
            ["group"],
            registry=r,
        )
        self.shaping_limit = Gauge(
            "mailsched_shaping_limit",
            "A shaping group's limit in force (slowed, or the warm-up's daily cap), by window",
            ["group", "window"],
            registry=r,
        )
        self.shaping_suspended = Gauge(
            "mailsched_shaping_suspended",
            "1 while replies keep a shaping group suspended, else 0",
            ["group"],
            registry=r,
        )
        for status in DeliveryStatus:
            self.deliveries.labels(status.value)
        for outcome in SendOutcome:
            self.sends.labels(outcome.value)
        for reply_class in ("2xx", "4xx", "5xx", "none"):
            self.smtp_replies.labels(reply_class)
        for status_class in ("2xx", "3xx", "4xx", "5xx", "timeout", "error"):
            self.webhook_attempts.labels(status_class)
        for inbound in INBOUND_OUTCOMES:
            self.inbound_messages.labels(inbound)
