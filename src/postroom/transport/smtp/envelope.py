"""What a job needs from the server before anything of it is sent.

A job is checked twice: once when it is read (an envelope that cannot go into a command at all
is ``PERMANENT`` at once), and once per connection, before MAIL FROM, against what the server
offered:

* **SMTPUTF8** (RFC 6531): a non-ASCII address, or 8-bit header bytes (UTF-8 headers), need it;
  MAIL FROM then carries ``SMTPUTF8``. Without the offer the job is ``PERMANENT``, naming it.
* **8BITMIME** (RFC 6152): a body with 8-bit bytes needs it (``BODY=8BITMIME``); without the
  offer, and unless SMTPUTF8 is used, the job is ``PERMANENT``, naming it.
* **SIZE** (RFC 1870): when the server announces a limit and the message is larger, the job is
  ``PERMANENT`` naming both sizes; otherwise MAIL FROM declares ``SIZE=<octets>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postroom._quick_init import quick_init
from postroom.transport.base import Job, envelope_problem
from postroom.transport.smtp.session import Session

__all__ = [
    "MAX_RECIPIENTS_PER_TRANSACTION",
    "Prepared",
    "data_section",
    "mail_command",
    "prepare",
    "refusal",
]

MAX_RECIPIENTS_PER_TRANSACTION = 100
"""RFC 5321 4.5.3.1.8: servers must accept at least 100 recipients per transaction."""

_EOL = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


@quick_init
@dataclass(frozen=True, slots=True)
class Prepared:
    """A sendable job: sender, recipients without duplicates, the DATA section, and what the
    message needs from the server."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    needs_smtputf8: bool
    eight_bit_body: bool

    def chunks(self) -> list[tuple[str, ...]]:
        """The recipients in transactions of at most 100."""
        step = MAX_RECIPIENTS_PER_TRANSACTION
        if len(self.recipients) <= step:
            return [self.recipients]
        return [self.recipients[i : i + step] for i in range(0, len(self.recipients), step)]


def prepare(job: Job) -> Prepared | str:
    """The sendable form of ``job``, or why it cannot be sent at all."""
    mail_from, recipients, message = job
    problem = envelope_problem(mail_from, recipients)
    if problem is not None:
        return problem
    if not isinstance(message, bytes | bytearray | memoryview):
        return f"the message must be bytes, not {type(message).__name__}"
    data = data_section(bytes(message))
    ascii_addresses = mail_from.isascii() and "".join(recipients).isascii()
    ascii_head = ascii_body = data.isascii()
    if not ascii_body:
        head_end = data.find(b"\r\n\r\n")
        head_end = len(data) if head_end < 0 else head_end
        ascii_head = data[:head_end].isascii()
        ascii_body = data[head_end:].isascii()
    unique = tuple(recipients) if len(recipients) == 1 else tuple(dict.fromkeys(recipients))
    return Prepared(mail_from, unique, data, not (ascii_addresses and ascii_head), not ascii_body)


def mail_command(job: Prepared, session: Session) -> str | None:
    """MAIL FROM with the parameters the message needs; ``None`` when the server cannot take
    the message (:func:`refusal` says why)."""
    params = []
    limit = session.size_limit
    if session.offers("SIZE"):
        if limit is not None and len(job.data) > limit:
            return None
        params.append(f"SIZE={len(job.data)}")
    if job.needs_smtputf8:
        if not session.offers("SMTPUTF8"):
            return None
        params.append("SMTPUTF8")
    if job.eight_bit_body:
        if session.offers("8BITMIME"):
            params.append("BODY=8BITMIME")
        elif not job.needs_smtputf8:
            return None
    return " ".join([f"MAIL FROM:<{job.mail_from}>", *params])


def refusal(job: Prepared, session: Session) -> str:
    """Why :func:`mail_command` refused ``job`` on ``session``."""
    limit = session.size_limit
    if limit is not None and len(job.data) > limit:
        return (
            f"the message is {len(job.data)} octets and the server accepts at most {limit} "
            "(SIZE, RFC 1870)"
        )
    if job.needs_smtputf8:
        return (
            "the message needs SMTPUTF8 (RFC 6531: a non-ASCII address or header), "
            "which the server does not offer"
        )
    return "the message has an 8-bit body and the server does not offer 8BITMIME (RFC 6152)"


def data_section(message: bytes) -> bytes:
    """The DATA section: CRLF line endings, leading dots doubled, ending in CRLF . CRLF.

    What postroom renders already has CRLF line endings and seldom a line starting with a dot;
    counting first (in C) spares it the two substitutions.
    """
    crlf = message.count(b"\r\n")
    clean = crlf == message.count(b"\n") == message.count(b"\r")
    if clean and not message.startswith(b".") and b"\n." not in message:
        body = message
    else:
        body = _LEADING_DOT.sub(b"..", _EOL.sub(b"\r\n", message))
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"
