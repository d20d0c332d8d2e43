"""Helpers of the page and API handlers: loading a message, acting on it, formatting, charts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response

from postroom.errors import NotFoundError
from postroom.store.browse import Overview
from postroom.store.records import AttemptInfo, MessageInfo
from postroom.web.charts import Series, line_chart
from postroom.web.context import WebContext, rendered_message
from postroom.web.mail import parse_mail

__all__ = [
    "PREVIEW_CSP",
    "RecipientOutcome",
    "act",
    "fmt_age",
    "fmt_size",
    "fmt_time",
    "load_message",
    "overview_charts",
    "part_response",
    "recipient_outcomes",
    "rendered",
]

#: an email's HTML, shown in a sandboxed frame: no script, nothing loaded from anywhere
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._ -]")


def fmt_time(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def fmt_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def overview_charts(o: Overview) -> dict[str, str]:
    """The overview's SVG charts: per minute, per hour, latency percentiles."""
    minute_labels = [p.start.strftime("%H:%M") for p in o.per_minute]
    hour_labels = [p.start.strftime("%d %H:00") for p in o.per_hour]
    latency_labels = [p.start.strftime("%H:00") for p in o.latency]
    return {
        "per_minute": line_chart(
            "Sent and failed per minute, last hour",
            minute_labels,
            [
                Series("sent", "#2b8a3e", [p.sent for p in o.per_minute]),
                Series("failed", "#c92a2a", [p.failed for p in o.per_minute]),
            ],
        ),
        "per_hour": line_chart(
            "Sent and failed per hour",
            hour_labels,
            [
                Series("sent", "#2b8a3e", [p.sent for p in o.per_hour]),
                Series("failed", "#c92a2a", [p.failed for p in o.per_hour]),
            ],
        ),
        "latency": line_chart(
            "Enqueue-to-sent latency per hour (seconds)",
            latency_labels,
            [
                Series("p50", "#1971c2", [p.p50_s for p in o.latency]),
                Series("p95", "#f08c00", [p.p95_s for p in o.latency]),
                Series("p99", "#c92a2a", [p.p99_s for p in o.latency]),
            ],
            unit=" s",
        ),
    }


def load_message(
    context: WebContext, message_id: str
) -> tuple[MessageInfo, list[AttemptInfo], bytes]:
    """The row, its attempts and its payload (``NotFoundError`` / ``KeyError`` when gone)."""
    info = context.store.get(message_id)
    return info, context.store.attempts(message_id), context.payload(message_id)


def rendered(payload: bytes) -> tuple[bytes | None, str | None]:
    """The message as sent, or ``None`` and why not (see :func:`rendered_message`)."""
    return rendered_message(payload)


def act(context: WebContext, message_id: str, action: str) -> str:
    """Cancel or retry a message, as ``postroom cancel`` / ``retry`` do; return what happened.

    ``StoreError`` (wrong state) and ``NotFoundError`` propagate.
    """
    now = context.now()
    if action == "cancel":
        context.store.cancel(message_id, now)
        return "cancelled"
    if action == "retry":
        expires_at = now + context.max_time
        context.store.retry(message_id, now, expires_at)
        return f"queued again (expires {fmt_time(expires_at)})"
    raise NotFoundError(f"no action {action!r} (cancel or retry)")


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """Where one recipient stands: its last reply and what it means."""

    recipient: str
    state: str
    reply: str


def recipient_outcomes(info: MessageInfo, tries: list[AttemptInfo]) -> list[RecipientOutcome]:
    """Each envelope recipient with the last reply it got (accepted, refused, deferred)."""
    last: dict[str, tuple[int | None, str]] = {}
    for attempt in tries:
        for reply in attempt.replies:
            text = " ".join(str(x) for x in (reply.code, reply.enhanced_code, reply.text) if x)
            last[reply.recipient] = (reply.code, text)
    pending = set(info.pending_recipients or [])
    outcomes = []
    for rcpt in info.recipients:
        code, text = last.get(rcpt, (None, ""))
        outcomes.append(RecipientOutcome(rcpt, _state(code, rcpt in pending, info.status), text))
    return outcomes


def _state(code: int | None, pending: bool, status: str) -> str:
    if code is not None and 200 <= code < 300:
        return "accepted"
    if code is not None and code >= 500:
        return "refused"
    if code is not None:
        return "deferred"
    if status == "sent" and not pending:
        return "accepted"
    return "pending" if status in ("queued", "sending", "failed", "expired") else status


def part_response(request: Request, raw: bytes, filename: str) -> Response:
    """``.../raw`` (as text), ``.../download`` (the .eml), ``.../preview`` (the HTML body,
    sandboxed) or ``.../attachments/{n}`` of the message ``raw``."""
    kind = request.url.path.rsplit("/", 2)
    if kind[-1] == "raw":
        return Response(raw, media_type="text/plain; charset=utf-8")
    if kind[-1] == "download":
        return _download(raw, filename, "message/rfc822")
    mail = parse_mail(raw)
    if kind[-1] == "preview":
        response = Response(mail.html or "", media_type="text/html; charset=utf-8")
        response.headers["content-security-policy"] = PREVIEW_CSP
        return response
    index = request.path_params.get("n")
    if kind[-2] != "attachments" or index is None or not 0 <= int(index) < len(mail.attachments):
        return Response("no such part", 404, media_type="text/plain")
    attachment = mail.attachments[int(index)]
    return _download(attachment.data, attachment.filename, "application/octet-stream")


def _download(data: bytes, filename: str, media_type: str) -> Response:
    """A file to save, never shown in the dashboard's origin (``attachment``, no sniffing)."""
    safe = _UNSAFE_FILENAME.sub("_", filename)[:150] or "download"
    response = Response(data, media_type=media_type)
    response.headers["content-disposition"] = f'attachment; filename="{safe}"'
    return response
