"""``postroom status`` and ``postroom stats``: read-only views of the database."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from postroom.cli.common import (
    Subparsers,
    add_config_option,
    add_json_option,
    load_config,
    message_must_exist,
    now,
    opened_store,
    since_arg,
)
from postroom.cli.output import (
    JsonValue,
    fmt_seconds,
    fmt_time,
    json_time,
    print_json,
    record_to_json,
    table,
)

if TYPE_CHECKING:
    from postroom.store import AttemptInfo, MessageInfo, Stats

__all__ = ["register"]


def register(sub: Subparsers) -> None:
    """Add the ``status`` and ``stats`` commands."""
    status = sub.add_parser(
        "status",
        help="show one message: state, times, attempts, failure",
        description="Show one message: its state, times (UTC), every delivery attempt with "
        "its SMTP reply, and the last failure reason.",
    )
    add_config_option(status)
    status.add_argument("id", metavar="ID", help="the id that send/enqueue() returned")
    add_json_option(status)
    status.set_defaults(handler=run_status)

    stats = sub.add_parser(
        "stats",
        help="counts by status, delivery latency, top failures",
        description="Counts by status, enqueue-to-sent latency percentiles and the most "
        "frequent failure reasons.",
    )
    add_config_option(stats)
    stats.add_argument(
        "--since",
        type=since_arg,
        metavar="DURATION|TIME",
        help="only messages created since this long ago (24h, 7d) or since this "
        "ISO 8601 time (default: all)",
    )
    add_json_option(stats)
    stats.set_defaults(handler=run_stats)


def run_status(args: argparse.Namespace) -> int:
    """Print one message and its attempts."""
    config = load_config(args)
    with opened_store(config, read_only=True) as store:
        with message_must_exist(args.id):
            info = store.get(args.id)
        attempts = store.attempts(args.id)
    if args.json:
        states: list[JsonValue] = [
            {"recipient": rcpt, "state": state, "reply": reply}
            for rcpt, state, reply in recipient_states(info, attempts)
        ]
        print_json(
            {
                "message": record_to_json(info),
                "recipients": states,
                "attempts": [record_to_json(a) for a in attempts],
            }
        )
    else:
        print(_status_text(info, attempts))
    return 0


def recipient_states(
    info: MessageInfo, attempts: list[AttemptInfo]
) -> list[tuple[str, str, str | None]]:
    """Each recipient's state and the last reply that decided it.

    ``accepted``: the server took the message for it; ``refused``: refused for good (5yz);
    ``pending``: still to deliver (never tried, or refused for now).
    """
    last: dict[str, tuple[str, int | None]] = {}
    for attempt in attempts:
        for r in attempt.replies:
            shown = " ".join(p for p in (str(r.code or ""), r.enhanced_code or "", r.text) if p)
            last[r.recipient] = (shown, r.code)
    pending = set(info.recipients if info.pending_recipients is None else info.pending_recipients)
    states = []
    for rcpt in info.recipients:
        reply, code = last.get(rcpt, (None, None))
        if code is not None and 500 <= code < 600:
            state = "refused"
        elif rcpt in pending and info.status != "sent":
            state = "pending"
        else:
            state = "accepted" if reply is not None or info.status == "sent" else "pending"
        states.append((rcpt, state, reply))
    return states


def _status_text(info: MessageInfo, attempts: list[AttemptInfo]) -> str:
    rows = [
        ("id", info.id),
        ("status", info.status),
        ("subject", info.subject or "-"),
        ("from", info.mail_from),
        ("recipients", ", ".join(info.recipients)),
    ]
    if info.pending_recipients is not None:
        rows.append(("pending", ", ".join(info.pending_recipients) or "-"))
    rows += [
        ("priority", str(info.priority)),
        ("message-id", info.message_id or "-"),
        ("created", fmt_time(info.created_at)),
        ("send after", fmt_time(info.send_after)),
        ("next attempt", fmt_time(info.next_attempt_at)),
        ("due", fmt_time(info.due_at)),
        ("expires", fmt_time(info.expires_at)),
        ("sent", fmt_time(info.sent_at)),
        ("updated", fmt_time(info.updated_at)),
        ("fails", str(info.num_fails)),
        ("last failed", fmt_time(info.last_failed_at)),
        ("failure", info.failure or "-"),
    ]
    if info.lease_owner:
        rows.append(("lease", f"{info.lease_owner} until {fmt_time(info.lease_until)}"))
    text = (
        table(rows)
        + "\n\nrecipients:\n"
        + table(
            [
                (rcpt, state, reply or "-")
                for rcpt, state, reply in recipient_states(info, attempts)
            ],
            indent=2,
        )
    )
    if not attempts:
        return text + "\n\nattempts: none"
    return text + "\n\nattempts:\n" + _attempts_table(attempts)


def _attempts_table(attempts: list[AttemptInfo]) -> str:
    rows = []
    for number, a in enumerate(attempts, start=1):
        took_s = (a.ended_at - a.started_at).total_seconds() if a.ended_at else None
        rows.append(
            [
                str(number),
                fmt_time(a.started_at),
                fmt_seconds(took_s),
                a.outcome,
                str(a.code) if a.code is not None else "-",
                a.enhanced_code or "-",
                a.dispatcher or "-",
                " ".join((a.reply or "-").split()),
            ]
        )
    header = ["#", "started", "took", "outcome", "code", "enhanced", "dispatcher", "reply"]
    return table(rows, header=header, indent=2)


def run_stats(args: argparse.Namespace) -> int:
    """Print counts, latency percentiles and top failures."""
    config = load_config(args)
    with opened_store(config, read_only=True) as store:
        stats = store.stats(args.since, now())
    if args.json:
        print_json(_stats_json(stats))
    else:
        print(_stats_text(stats))
    return 0


def _stats_json(stats: Stats) -> dict[str, JsonValue]:
    return {
        "since": json_time(stats.since),
        "counts": {status: count for status, count in stats.counts.items()},
        "total": sum(stats.counts.values()),
        "attempts": stats.attempts,
        "latency_s": {
            "p50": stats.latency_p50_s,
            "p95": stats.latency_p95_s,
            "p99": stats.latency_p99_s,
        },
        "top_failures": [
            {"reason": reason, "count": count} for reason, count in stats.top_failures
        ],
        "dispatchers": [
            {
                "id": d.id,
                "host": d.host,
                "pid": d.pid,
                "started_at": json_time(d.started_at),
                "heartbeat_at": json_time(d.heartbeat_at),
                "relay": {
                    "up": d.relay_down_since is None,
                    "down_since": json_time(d.relay_down_since),
                    "reason": d.relay_failure,
                },
            }
            for d in stats.dispatchers
        ],
    }


def _stats_text(stats: Stats) -> str:
    since = f"since {fmt_time(stats.since)}" if stats.since else "all time"
    counts = [(status, str(count)) for status, count in stats.counts.items()]
    counts.append(("total", str(sum(stats.counts.values()))))
    latency = "  ".join(
        f"{name} {fmt_seconds(value)}"
        for name, value in (
            ("p50", stats.latency_p50_s),
            ("p95", stats.latency_p95_s),
            ("p99", stats.latency_p99_s),
        )
    )
    lines = [
        f"messages ({since}):",
        table(counts, indent=2),
        "",
        f"attempts: {stats.attempts}",
        f"enqueue-to-sent latency: {latency}",
        "",
    ]
    if stats.top_failures:
        rows = [(str(count), reason) for reason, count in stats.top_failures]
        lines += ["top failures:", table(rows, header=("count", "reason"), indent=2)]
    else:
        lines.append("top failures: none")
    lines += ["", *_dispatchers_text(stats)]
    return "\n".join(lines)


def _dispatchers_text(stats: Stats) -> list[str]:
    if not stats.dispatchers:
        return ["dispatchers: none running"]
    rows = [
        (
            d.id,
            fmt_time(d.heartbeat_at),
            "up"
            if d.relay_down_since is None
            else f"down since {fmt_time(d.relay_down_since)}: {d.relay_failure or '?'}",
        )
        for d in stats.dispatchers
    ]
    return ["dispatchers:", table(rows, header=("id", "last heartbeat", "relay"), indent=2)]
