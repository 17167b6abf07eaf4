"""What building messages and checking templates cost, in-process (no services)::

    python -m bench.templates [--recipients N]

These were wall-clock assertions in the unit tests, which a loaded CI machine would
break; here they are figures to read:

* rendering one letter of a plain campaign (the shared part is encoded once);
* one letter whose subject is the longest allowed (998 characters) and not ASCII,
  the case the email package's quadratic folding made 25 to 80 ms;
* one letter of a templated campaign whose body and HTML render to about 1 MiB,
  the largest allowed: what a worker's thread takes, not its event loop;
* the creation-time checks (:func:`mailsched.producer.campaigns._check_templates`)
  for N templated recipients, with bodies whose size the template settles and with
  bodies that must be rendered per recipient;
* the hostile templates of the hardening issue: how long the refusal takes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from mailsched.mail.message import MessageTemplate, Unsubscribe
from mailsched.mail.templates import MAX_BODY_BYTES, CampaignTemplates, TemplateProblem, context
from mailsched.producer.campaigns import _check_templates
from mailsched.producer.schemas import CampaignRequest

DATE = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LINKS = Unsubscribe("https://x.example/u/t", "mailto:u@x.example")
BODY = (
    "Dear {{ name|title }},\n"
    + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30
    + "\nYour code: {{ code }}\n{% if vip %}VIP{% endif %}\n"
)
HOSTILE = [
    "{{ [[1]*400]*400 }}",
    '{{ ["a"*100000]*100 }}',
    "{{ email.split }}",
    "{{ name|truncate(1) }}",
    "{% if x %}" * 300 + "{% endif %}" * 300,
    "{{ ('ab ' * 33000)|upper|length }}" * 100,
    "{{ v }}" * 40_000,
]


def best_of(repeat: int, work: Callable[[], object]) -> float:
    """The median of ``repeat`` timings of ``work``, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def per_letter(template: MessageTemplate, count: int, **options: object) -> float:
    started = time.perf_counter()
    for i in range(count):
        template.render(f"user{i}@example.org", i, DATE, name="Bob", unsubscribe=LINKS, **options)  # type: ignore[arg-type]
    return (time.perf_counter() - started) / count


def request(recipients: int, subject: str, body: str, html: str | None) -> CampaignRequest:
    return CampaignRequest.model_validate(
        {
            "userId": 1,
            "subject": subject,
            "body": body,
            "htmlBody": html,
            "startTime": "2026-01-25T12:00:00Z",
            "delaySeconds": 0,
            "hourlyLimit": 1000,
            "recipients": [
                {
                    "email": f"u{i}@ex.io",
                    "name": f"User {i}",
                    "vars": {"code": f"C{i}", "vip": i % 2 == 0},
                }
                for i in range(recipients)
            ],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    args = parser.parse_args()

    plain = MessageTemplate(1, "news@example.com", "Sale", "Body\n" * 200, html_body="<p>x</p>")
    print(f"plain letter: {per_letter(plain, 2000) * 1e6:.0f} µs")
    longest = MessageTemplate(
        1, "news@example.com", "{{ name }} " + "é x" * 329, "b\n", templated=True
    )
    print(f"letter, 998-char non-ASCII subject: {per_letter(longest, 200) * 1e3:.2f} ms")
    big = MessageTemplate(
        1,
        "news@example.com",
        "Hi {{ name }}",
        "{{ 'é' * 100000 }}" * 5,
        html_body="{{ ('<p>x</p>' * 10000)|safe }}" * 13,
        templated=True,
    )
    print(f"templated letter, bodies of about 1 MiB: {per_letter(big, 5) * 1e3:.0f} ms")
    made = best_of(
        3,
        lambda: MessageTemplate(
            1, "news@example.com", "s", "é" * 500_000, html_body="<" * 1_000_000
        ),
    )
    print(f"plain campaign's message, bodies of 1 MiB, encoded once: {made * 1e3:.0f} ms")

    n = args.recipients
    for label, html, body in (
        ("subject, text and HTML bodies settled by the template", f"<p>{BODY}</p>", BODY),
        ("subject, and a body rendered per recipient", None, "{{ (code * 3)|upper }}" * 40),
    ):
        campaign = request(n, "Hi {{ name }}, your code {{ code }}", body, html)
        seconds = best_of(3, lambda campaign=campaign: _check_templates(campaign, MAX_BODY_BYTES))  # type: ignore[misc]
        print(f"creation checks, {n} templated recipients ({label}): {seconds:.2f} s")
    plain_request = request(n, "Hello", "Plain body", None)
    seconds = best_of(3, lambda: _check_templates(plain_request, MAX_BODY_BYTES))
    print(f"creation checks, {n} recipients of a plain campaign: {seconds * 1e3:.2f} ms")

    for source in HOSTILE:

        def refuse(source: str = source) -> None:
            try:
                CampaignTemplates("s", source).render(
                    context("a@example.org", "Ann", {"v": "x" * 1000, "x": 1})
                )
            except TemplateProblem:
                return
            raise AssertionError(f"not refused: {source[:40]}")

        print(f"hostile {source[:40]!r}: refused in {best_of(3, refuse) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
