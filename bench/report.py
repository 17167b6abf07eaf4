"""The results as a markdown table, and its place in docs/benchmarks.md (between markers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.paths import scrub

BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "**missed**")


Row = tuple[str, str, str, str, str]


def _rows(r: dict[str, Any]) -> list[Row]:
    rows = _ingest_rows(r)
    if "ceiling" in r:
        rows += _throughput_rows(r)
    rows += _timeliness_rows(r) + _scale_rows(r) + _upload_rows(r) + _head_of_line_rows(r)
    for name, error in r.get("errors", {}).items():
        rows.append((name, "did not complete", error.splitlines()[0][:300], "", "**error**"))
    return rows


def _ingest_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for item in r.get("ingest", {}).get("results", []):
        n, s = item["recipients"], item["seconds"]
        target = "≤ 2 s" if n == 100_000 and item["stack"] == "mariadb+kafka" else ""
        ok = s <= 2.0 if target else None
        zones = item.get("calendar_zones", 0)
        zoned = f" in their own zones ({zones}, office hours)" if zones else ""
        rows.append(
            (
                "1 ingest",
                f"POST {n:,} recipients{zoned} → 201, {item['stack']}",
                f"{s:.2f} s ({item['recipients_per_s']:,}/s), "
                f"API peak RSS {item['peak_rss_mib']:.0f} MiB",
                target,
                _verdict(ok),
            )
        )
    return rows


def _throughput_rows(r: dict[str, Any]) -> list[Row]:
    ceiling = r["ceiling"]["emails_per_s"]
    rows: list[Row] = [
        (
            "2 throughput",
            f"`{r['ceiling']['command'].split(' -f ')[0]}` into the same sink (ceiling)",
            f"{ceiling:,}/s",
            "",
            "",
        )
    ]
    for run in r["throughput"]:
        rate = run["emails_per_s"] or 0
        processes = run.get("processes", 1)
        one = run["workers"] == 1 and processes == 1
        who = (
            f"{run['workers']} worker(s)"
            if processes == 1
            else f"1 `worker --processes {processes}`"
        )
        rows.append(
            (
                "2 throughput",
                f"{run['deliveries']:,} due now, 10 campaigns, {who}",
                f"{rate:,} emails/s = {100 * rate / ceiling:.0f}% of ceiling ({_cpu(run)})",
                "≥ 7,000/s and ≥ 25%" if one else "",
                _verdict(rate >= 7000 and rate >= 0.25 * ceiling) if one else "",
            )
        )
    if "throughput_many_small" in r:
        rows.append(_many_small_row(r["throughput_many_small"], r["throughput"][0]))
    return rows


def _cpu(run: dict[str, Any]) -> str:
    """Each process's CPU per email and share of a core; the machine's busy share."""
    share = run["cpu_share_pct"]
    per = run.get("cpu_us_per_email", {})
    shown = ", ".join(
        f"{k} {per[k]:,} µs ({v}%)" if k in per else f"{k} {v}%"
        for k, v in share.items()
        if k != "machine_busy_of_all_cores"
    )
    return (
        f"CPU per email (% of a core): {shown}; machine {share['machine_busy_of_all_cores']}% busy"
    )


def _many_small_row(small: dict[str, Any], large: dict[str, Any]) -> Row:
    rate, base = small["emails_per_s"] or 0, large["emails_per_s"] or 0
    ratio = rate / base if base else 0.0
    return (
        "2 throughput",
        f"{small['deliveries']:,} due now in {small['campaigns']:,} campaigns of "
        f"{small['recipients_each']} (`delaySeconds: 1`, so at most {small['campaigns']:,}/s), "
        "1 worker",
        f"{rate:,} emails/s = {100 * ratio:.0f}% of the ten large campaigns' {base:,}/s"
        + (" (held back by the plan: a floor)" if rate >= 0.9 * small["campaigns"] else "")
        + f" ({_cpu(small)})",
        "≥ 75% of ten large campaigns",
        _verdict(ratio >= 0.75),
    )


def _timeliness_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for t in r.get("timeliness", []):
        sent, start = t["sent_at_late"], t["started_at_late"]
        cap = t.get("capacity")
        of = (
            f" = 50% of its capacity {'≥ ' if cap['kept_up'] else ''}"
            f"{cap['capacity_per_s']:,}/s (run planned at {cap['planned_rate_per_s']:,}/s "
            f"for {cap['seconds']} s)"
            if cap
            else ""
        )
        rows.append(
            (
                "3 timeliness",
                f"{t['shape']}: {t['planned_rate_per_s']:,}/s planned{of}, over "
                f"{t['campaigns']:,} campaigns for {t['seconds']} s",
                f"sent_at late p50 {sent['p50_ms']:.0f} ms, p99 {sent['p99_ms']:.0f} ms; "
                f"slot start late p50 {start['p50_ms']:.0f} ms, p99 {start['p99_ms']:.0f} ms; "
                f"achieved {t['achieved_rate_per_s']}/s, "
                f"{t['finished']:,}/{t['deliveries']:,} done",
                "p99 ≤ 500 ms",
                _verdict(sent["p99_ms"] <= 500),
            )
        )
    return rows


def _scale_rows(r: dict[str, Any]) -> list[Row]:
    scale = r.get("scale", {})
    points = scale.get("points", [])
    rows: list[Row] = []
    for p in points:
        rss = p["rss_mib"]
        plans = " / ".join(
            f"{plan.get('type')} on {plan.get('key')}, rows {plan.get('rows')}"
            for plan in p["explain"]
        )
        rows.append(
            (
                "4 scale",
                f"{p['backlog']:,} deliveries weeks ahead (+{scale['probe']:,} sent now)",
                f"RSS api+dispatcher {rss['api_dispatcher']:.0f} MiB, "
                f"worker {rss['worker']:.0f} MiB; "
                f"claim_due {p['claim_due_ms']} ms (EXPLAIN: {plans or 'none'})",
                "RSS ≤ 200 MB",
                _verdict(max(rss.values()) * 2**20 <= 200e6),
            )
        )
    for skipped in scale.get("skipped", []):
        rows.append(
            (
                "4 scale",
                f"{skipped['backlog']:,} deliveries weeks ahead",
                f"not inserted: {skipped['disk_free_gb']} GB free on MariaDB's disk",
                "",
                "**error**",
            )
        )
    if len(points) >= 2:
        rows.append(_flat_row(points, bool(scale.get("skipped"))))
    return rows


def _flat_row(points: list[dict[str, Any]], skipped: bool) -> Row:
    """Smallest backlog against largest: claim_due within 2x (or 5 ms, for sub-ms noise),
    every process's peak RSS within 10 MiB."""
    low, high = points[0], points[-1]
    claim_ok = high["claim_due_ms"] <= max(2 * low["claim_due_ms"], low["claim_due_ms"] + 5)
    growth = {n: high["rss_mib"][n] - low["rss_mib"][n] for n in low["rss_mib"]}
    grew = ", ".join(f"{n} {g:+.0f} MiB" for n, g in growth.items())
    return (
        "4 scale",
        f"from {low['backlog']:,} to {high['backlog']:,} future deliveries",
        f"claim_due {low['claim_due_ms']} → {high['claim_due_ms']} ms; peak RSS {grew}",
        "flat: claim_due ≤ 2 times (or + 5 ms), RSS + ≤ 10 MiB",
        _verdict(claim_ok and all(g <= 10 for g in growth.values()) and not skipped),
    )


def _upload_rows(r: dict[str, Any]) -> list[Row]:
    uploads = r.get("upload", {}).get("results", [])
    flat = (
        len(uploads) < 2
        or max(u["peak_rss_mib"] for u in uploads) - min(u["peak_rss_mib"] for u in uploads) <= 30
    )
    rows: list[Row] = []
    for u in uploads:
        n = u["recipients"]
        million = n == 1_000_000
        rows.append(
            (
                "5 upload",
                f"{n:,} recipients as NDJSON ({u['body_mb']} MB) to a draft, then scheduled, "
                "MariaDB",
                f"{u['total_s']:.1f} s (upload {u['upload_s']:.1f} s, {u['rows_per_s']:,}/s; "
                f"schedule {u['schedule_s']:.1f} s); API peak RSS {u['peak_rss_mib']:.0f} MiB",
                "≤ 20 s, RSS ≤ 300 MB, flat" if million else "",
                _verdict(u["total_s"] <= 20 and u["peak_rss_mib"] * 2**20 <= 300e6 and flat)
                if million
                else "",
            )
        )
    return rows


def _head_of_line_rows(r: dict[str, Any]) -> list[Row]:
    h = r.get("head_of_line")
    if not h:
        return []
    late = ", ".join("not sent" if x is None else f"{x:,}" for x in h["late_ms"])
    worst = h["max_late_ms"]
    ok = h["small_sent"] == h["small"] and worst is not None and worst <= 1000
    return [
        (
            "6 head-of-line",
            f"{h['small']}-recipient campaign, `delaySeconds: 1`, started 1 s ahead while "
            f"{h['bulk']:,} bulk emails due now are sent by 1 worker "
            f"({h['bulk_done_when_posted']:,} sent when it was posted; the bulk ended "
            f"{h['bulk_ended_after_start_s']} s after its start)",
            f"each email's sent_at behind its plan (ms): {late}; max "
            + ("none sent" if worst is None else f"{worst:,} ms"),
            "every email ≤ 1 s",
            _verdict(ok),
        )
    ]


def markdown(r: dict[str, Any]) -> str:
    """Everything a reader needs to trust (or redo) the run, then the figures."""
    m, v = r["machine"], r["versions"]
    lines = [
        f"### `{r['command']}` on {r['date']} ({r['duration_s']} s)",
        "",
        f"- **Machine**: {m['nproc']} x {m['cpu_model']}, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, load average {m.get('loadavg_1m_at_start', '?')} at start",
        f"- **Versions**: Python {v['python']}, mailsched `{v['mailsched_git']}`, "
        f"MariaDB {v['mariadb']}, Kafka {v['kafka']}, SQLAlchemy {v['SQLAlchemy']}, "
        f"confluent-kafka {v['confluent-kafka']} (librdkafka {v['librdkafka']}), "
        f"asyncmy {v['asyncmy']}, FastAPI {v['fastapi']}, "
        f"pydantic {v['pydantic']}, email-validator {v['email-validator']}",
        "- **Settings**: " + ", ".join(f"`{k}={x}`" for k, x in r["settings"].items()),
        "",
        "| # | measurement | result | target | |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in _rows(r)]
    if "ingest_profile" in r:
        lines += ["", _ingest_breakdown(r["ingest_profile"])]
    if "throughput_profile" in r:
        lines += ["", _profiles(r)]
    lines += ["", _commands(r)]
    return scrub("\n".join(lines))


def _ingest_breakdown(p: dict[str, Any]) -> str:
    phases = dict(p["phases_s"])
    calendar = {k: phases.pop(k) for k in ("validate_30_zones", "plan_30_zones") if k in phases}
    total = sum(phases.values())
    cells = ", ".join(
        f"{name} {sec:.3f} s ({100 * sec / total:.0f}%)" for name, sec in phases.items()
    )
    top = "; ".join(f"`{x['function']}` {x['self_s']:.2f} s" for x in p["top_self"][:6])
    return (
        f"**Where a {p['recipients']:,}-recipient POST goes** (MariaDB, in-process through "
        f"`Campaigns.create`, each step timed alone): {cells}. Under pyinstrument (which "
        f"inflates many small calls) the same work took {p['profiled_s']:.2f} s; "
        f"most time of their own: {top}."
        + (
            f" With a calendar in each recipient's zone over 30 zones, validating took "
            f"{calendar['validate_30_zones']:.3f} s and planning alone "
            f"{calendar['plan_30_zones']:.3f} s (median of 3, from cold calendars)."
            if calendar
            else ""
        )
    )


def _profiles(r: dict[str, Any]) -> str:
    prof = r["throughput_profile"]
    out = [
        f"**py-spy under load** ({prof['deliveries']:,} deliveries, 1 worker, "
        f"{prof['emails_per_s']} emails/s while sampled): share of samples.",
        "",
    ]
    for name, summary in prof["profiles"].items():
        inclusive = ", ".join(
            f"`{x['function']}` {x['pct']}%" for x in summary["mailsched_inclusive"][:10]
        )
        own = ", ".join(f"`{x['function']}` {x['pct']}%" for x in summary["own"][:8])
        out += [f"- {name}, inclusive: {inclusive}", f"- {name}, own time: {own}"]
    return "\n".join(out)


def _commands(r: dict[str, Any]) -> str:
    commands = list(r.get("ingest", {}).get("commands", []))
    if r.get("throughput"):
        commands += r["throughput"][-1]["commands"]
    if "ceiling" in r:
        commands.append(r["ceiling"]["command"])
    body = "\n".join(commands)
    return f"Processes as the bench started them (per-run names vary):\n\n```\n{body}\n```"


def update_doc(doc: Path, table: str) -> None:
    """Replace what is between the markers with ``table`` (the markers are added if missing)."""
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
