"""What the message and mailbox pages show of one RFC 5322 message: headers, text, HTML, files.

The message is parsed with the standard library (``email.policy.default``), leniently: a part
that cannot be decoded is shown as what it is, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

__all__ = ["Attachment", "ParsedMail", "parse_mail"]

#: headers of a part that name an attachment's content, not the message
_MAX_TEXT_CHARS = 1_000_000


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attached (or inline) file: its position among the attachments, name, type, bytes."""

    index: int
    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """The parts of a message a reader looks at."""

    headers: list[tuple[str, str]]
    subject: str
    text: str | None
    html: str | None
    attachments: list[Attachment] = field(default_factory=list)


def parse_mail(raw: bytes) -> ParsedMail:
    """Headers (in order), the text and HTML bodies, and every attachment of ``raw``."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    headers = [(str(name), _header_text(value)) for name, value in message.items()]
    text, html = _body(message, "plain"), _body(message, "html")
    attachments = [
        Attachment(i, part.get_filename() or f"part-{i + 1}", part.get_content_type(), _bytes(part))
        for i, part in enumerate(_attachments(message))
    ]
    return ParsedMail(headers, _header_text(message.get("Subject", "")), text, html, attachments)


def _header_text(value: object) -> str:
    try:
        return str(value)
    except (ValueError, LookupError):  # an undecodable encoded word
        return repr(value)


def _body(message: EmailMessage, subtype: str) -> str | None:
    try:
        part = message.get_body(preferencelist=(subtype,))
    except (KeyError, LookupError):
        return None
    if part is None or part.get_content_type() != f"text/{subtype}":
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):  # unknown charset, broken encoding
        content = _bytes(part).decode("utf-8", "replace")
    return str(content)[:_MAX_TEXT_CHARS]


def _attachments(message: EmailMessage) -> list[Message]:
    if not message.is_multipart():
        return []
    found: list[Message] = []
    for part in message.walk():
        if part.is_multipart() or part is message:
            continue
        if part.get_content_disposition() in ("attachment", "inline") and (
            part.get_filename() or part.get_content_maintype() != "text"
        ):
            found.append(part)
    return found


def _bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""
