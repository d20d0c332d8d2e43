"""``postroom send``: queue one email from the command line and print its id.

The message goes through the same client as ``Email.enqueue()``: it is put on the in-process
buffer, then flushed to the queue before the command exits. If the queue has not taken it within
``email.flush-timeout`` the command fails (exit code 1) and says so: the message is not queued.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from postroom.cli.common import (
    Subparsers,
    UsageError,
    add_config_option,
    duration_arg,
    header_arg,
    load_config,
    readable_file,
    when_arg,
)
from postroom.durations import format_duration
from postroom.errors import HeaderError, QueueError

if TYPE_CHECKING:
    from postroom.client import Outbox
    from postroom.message import Email

__all__ = ["register"]


def register(sub: Subparsers) -> None:
    """Add the ``send`` command."""
    parser = sub.add_parser(
        "send",
        help="queue an email and print its id",
        description="Queue one email and print its message id. Fails (exit code 1) when the "
        "queue did not take it within email.flush-timeout.",
    )
    add_config_option(parser)
    _add_envelope_options(parser)
    _add_content_options(parser)
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--later",
        type=duration_arg,
        metavar="DURATION",
        help="send after this delay (Go-style: 90s, 5m, 1h30m)",
    )
    when.add_argument(
        "--at",
        type=when_arg,
        metavar="TIME",
        help="send at this ISO 8601 time; without an offset it is local time "
        "(e.g. 2026-12-01T09:00)",
    )
    parser.set_defaults(handler=run)


def _add_envelope_options(parser: argparse.ArgumentParser) -> None:
    default_from = os.environ.get("POSTROOM_FROM") or None
    parser.add_argument(
        "--from",
        dest="from_",
        metavar="ADDRESS",
        default=default_from,
        required=default_from is None,
        help="author, e.g. 'Jordan <jordan@example.com>' (env POSTROOM_FROM)",
    )
    for flag, what in (
        ("--to", "recipient"),
        ("--cc", "copy recipient"),
        ("--bcc", "blind copy recipient"),
        ("--reply-to", "reply address"),
    ):
        parser.add_argument(
            flag, action="append", default=[], metavar="ADDRESS", help=f"{what} (repeatable)"
        )


def _add_content_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject", default=None)
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--text", metavar="TEXT", help="plain text body")
    text.add_argument(
        "--text-file",
        metavar="FILE",
        help="plain text body from a UTF-8 file ('-' reads standard input)",
    )
    html = parser.add_mutually_exclusive_group()
    html.add_argument("--html", metavar="HTML", help="HTML body")
    html.add_argument(
        "--html-file", metavar="FILE", help="HTML body from a UTF-8 file ('-' reads standard input)"
    )
    parser.add_argument(
        "--header",
        type=header_arg,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra header (repeatable)",
    )
    parser.add_argument("--priority", type=int, default=0, help="higher goes first (default 0)")
    parser.add_argument(
        "--idempotency-key",
        metavar="KEY",
        default=None,
        help="at most one email per key: sending again with the same key sends nothing more "
        "(until the message is purged)",
    )
    parser.add_argument(
        "--attach",
        type=readable_file,
        action="append",
        default=[],
        metavar="FILE",
        help="attach a file (repeatable)",
    )
    parser.add_argument(
        "--inline",
        type=readable_file,
        action="append",
        default=[],
        metavar="FILE",
        help="attach a file inline; the HTML body shows it as cid:<file name> (the "
        "content ids are printed on stderr; repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    """Build the email, queue it, flush, print the id."""
    from postroom.client import Outbox

    email = build_email(args)
    config = load_config(args)
    outbox = Outbox(config)
    try:
        message_id = _enqueue(email, outbox, args)
    finally:
        left = outbox.close()  # flushes for up to email.flush-timeout first
    if left:
        raise QueueError(
            f"the queue did not take message {message_id} within "
            f"{format_duration(config.email.flush_timeout)} (email.flush-timeout); "
            "it was not queued"
        )
    print(message_id)
    return 0


def _enqueue(email: Email, outbox: Outbox, args: argparse.Namespace) -> str:
    later: timedelta | None = args.later
    at: datetime | None = args.at
    key: str | None = args.idempotency_key
    if later is not None:
        return email.send_later(later, outbox=outbox, idempotency_key=key)
    if at is not None:
        return email.send_at(at, outbox=outbox, idempotency_key=key)
    return email.enqueue(outbox=outbox, idempotency_key=key)


def build_email(args: argparse.Namespace) -> Email:
    """The :class:`~postroom.message.Email` the options describe (MessageError when invalid)."""
    from postroom.message import Email

    if not (args.to or args.cc or args.bcc):
        raise UsageError("send: give at least one recipient with --to, --cc or --bcc")
    email = Email(
        from_=args.from_,
        to=args.to,
        cc=args.cc,
        bcc=args.bcc,
        reply_to=args.reply_to,
        subject=args.subject or "",
        text=_body(args.text, args.text_file, "--text-file"),
        html=_body(args.html, args.html_file, "--html-file"),
        headers=_headers(args.header),
        priority=args.priority,
    )
    for path in args.attach:
        email.attach_file(path)
    for path in args.inline:
        _attach_inline(email, path)
    return email


def _attach_inline(email: Email, path: Path) -> None:
    """Attach inline with the file name as Content-ID when it is usable as one (so the HTML can
    say ``cid:logo.png``), else a generated one; either way say which on stderr."""
    data = _read_bytes(path)
    try:
        part = email.attach(data, filename=path.name, inline=True, content_id=path.name)
    except HeaderError:
        part = email.attach(data, filename=path.name, inline=True)
    print(f"inline {path.name}: cid:{part.content_id}", file=sys.stderr)


def _body(value: str | None, file: str | None, flag: str) -> str | None:
    if file is None:
        return value
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{flag} {file}: {_reason(exc)}") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, UnicodeDecodeError):
        return "is not UTF-8 text"
    return str(exc)


def _headers(pairs: list[tuple[str, str]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in pairs:
        if name.lower() in (known.lower() for known in headers):
            raise UsageError(f"send: header {name!r} is given twice")
        headers[name] = value
    return headers
