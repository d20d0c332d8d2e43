"""Turn a Django ``EmailMessage`` into a postroom :class:`~postroom.Email`.

The result carries what Django's SMTP backend would send: the same From, To, Cc, Reply-To,
Subject, Date and Message-ID (when given in ``extra_headers``), the other extra headers, the
text and HTML bodies and every attachment, with the same envelope (``from_email`` as MAIL FROM,
``to + cc + bcc`` as recipients). Django's own MIME tree is not copied: postroom writes the
containers the content needs.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from email.message import Message
from email.utils import formataddr, getaddresses, parsedate_to_datetime
from typing import Any

from postroom.errors import MessageError
from postroom.message import Email

__all__ = ["to_email"]


def to_email(message: Any) -> Email:
    """The postroom :class:`~postroom.Email` for a Django ``EmailMessage`` (or
    ``EmailMultiAlternatives``), with the message's ``priority`` attribute if it has one.

    Raises :class:`~postroom.errors.MessageError` naming what postroom cannot express (say,
    a ``text/calendar`` alternative)."""
    headers = {str(name): str(value) for name, value in message.extra_headers.items()}
    special = _pop_special(headers)
    from_header = special.get("from")
    email = Email(
        from_=from_header or _address(message.from_email),
        subject=str(special.get("subject", message.subject)),
        headers=headers,
        auto_text=False,  # Django sends only the parts it was given
    )
    if from_header is not None:
        email.sender = _address(message.from_email)  # Django's MAIL FROM stays from_email
    _set_recipients(email, message, special)
    _set_identity(email, special)
    _set_bodies(email, message)
    for attachment in message.attachments:
        _attach(email, attachment, message)
    priority = getattr(message, "priority", None)
    if priority is not None:
        email.priority = priority
    return email


_SPECIAL = ("from", "to", "cc", "reply-to", "subject", "date", "message-id")


def _pop_special(headers: dict[str, str]) -> dict[str, str]:
    """Remove and return the extra headers postroom sets through fields, by lower-case name."""
    special = {}
    for name in list(headers):
        if name.lower() in _SPECIAL:
            special[name.lower()] = headers.pop(name)
    return special


def _address(value: object) -> str:
    if isinstance(value, tuple | list) and len(value) == 2:  # Django accepts (name, address)
        return formataddr((str(value[0]), str(value[1])))
    return str(value)


def _addresses(values: Iterable[object]) -> list[str]:
    return [_address(value) for value in values if value]


def _split(header: str) -> list[str]:
    return [formataddr(pair) for pair in getaddresses([header]) if pair[1]]


def _set_recipients(email: Email, message: Any, special: dict[str, str]) -> None:
    """Headers as Django writes them; the envelope as Django's SMTP backend sends it."""
    to, cc = _addresses(message.to), _addresses(message.cc)
    email.to = _split(special["to"]) if "to" in special else to
    email.cc = _split(special["cc"]) if "cc" in special else cc
    reply_to = _addresses(message.reply_to)
    email.reply_to = _split(special["reply-to"]) if "reply-to" in special else reply_to
    bcc = _addresses(message.bcc)
    if "to" in special or "cc" in special:  # the envelope keeps what a header replaced
        shown = {spec.lower() for spec in email.envelope_recipients}
        bcc = [a for a in to + cc if _spec(a).lower() not in shown] + bcc
    email.bcc = bcc


def _spec(address: str) -> str:
    return getaddresses([address])[0][1]


def _set_identity(email: Email, special: dict[str, str]) -> None:
    if "message-id" in special:
        email.message_id = special["message-id"].strip()
    if "date" in special:
        try:
            email.date = parsedate_to_datetime(special["date"])
        except (TypeError, ValueError) as exc:
            raise MessageError(f"extra header Date {special['date']!r} is not a date") from exc


def _set_bodies(email: Email, message: Any) -> None:
    body = "" if message.body is None else str(message.body)
    subtype = message.content_subtype
    if subtype == "html":
        email.html = body
    elif subtype == "plain":
        email.text = body
    else:
        raise MessageError(f"content_subtype {subtype!r} is not supported (plain or html)")
    for content, mimetype in getattr(message, "alternatives", ()):
        _add_alternative(email, str(content), str(mimetype))


def _add_alternative(email: Email, content: str, mimetype: str) -> None:
    if mimetype == "text/html" and email.html is None:
        email.html = content
    elif mimetype == "text/plain" and email.text is None:
        email.text = content
    else:
        raise MessageError(
            f"an alternative of type {mimetype!r} cannot be sent by postroom "
            "(one text/plain and one text/html part are supported)"
        )


def _attach(email: Email, attachment: Any, message: Any) -> None:
    if isinstance(attachment, Message):
        _attach_part(email, attachment)
        return
    filename, content, mimetype = attachment
    if mimetype is None:
        guessed, _ = mimetypes.guess_type(filename or "")
        mimetype = guessed or "application/octet-stream"
    content_type = str(mimetype)
    if content_type == "message/rfc822":
        content = _message_bytes(content)
    elif content_type.startswith("text/") and isinstance(content, str):
        content_type = f"{content_type}; charset={message.encoding or 'utf-8'}"
        content = content.encode(message.encoding or "utf-8")
    email.attach(content, filename or _unnamed(content_type, None), content_type)


def _message_bytes(content: object) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode("utf-8")
    if isinstance(content, Message):
        return content.as_bytes()
    return bytes(content.message().as_bytes())  # type: ignore[attr-defined]


def _attach_part(email: Email, part: Message) -> None:
    """A MIME part given to ``attach()``: its type, file name, Content-ID and disposition."""
    if part.is_multipart() and part.get_content_type() != "message/rfc822":
        raise MessageError(
            f"a {part.get_content_type()} attachment cannot be sent by postroom: attach its "
            "parts one by one"
        )
    content_type = part.get_content_type()
    if content_type == "message/rfc822":
        inner = part.get_payload(0)
        assert isinstance(inner, Message)
        content = inner.as_bytes()
    else:
        payload = part.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset()
    if charset and content_type.startswith("text/"):
        content_type = f"{content_type}; charset={charset}"
    content_id = part.get("Content-ID")
    cid = str(content_id).strip().strip("<>") if content_id else None
    disposition = part.get_content_disposition()
    inline = disposition == "inline" or (disposition is None and cid is not None)
    filename = part.get_filename() or _unnamed(content_type, cid)
    email.attach(content, filename, content_type, inline, content_id=cid)


def _unnamed(content_type: str, content_id: str | None) -> str:
    """A file name for a part given without one (postroom names every part)."""
    extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    stem = content_id.split("@")[0] if content_id else "attachment"
    return f"{stem}{extension}"
