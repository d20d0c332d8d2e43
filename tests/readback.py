"""Reading a rendered message back, for the property tests: the wire rules, then the same
addresses, subject and parts through the standard library (default policy) and through postroom.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from typing import Any

from postroom.message import Email
from postroom.message.addresses import parse_address
from postroom.message.html_text import html_to_text

__all__ = ["check_postroom", "check_stdlib", "wire_rules"]


def address_key(text: str, smtputf8: bool) -> tuple[str, str]:
    parsed = parse_address(text)
    return " ".join(parsed.name.split()), parsed.spec(smtputf8)


def newlines(value: str | None) -> str:
    return (value or "").replace("\r\n", "\n").replace("\r", "\n")


def wire_rules(raw: bytes, e: Email) -> None:
    if not e.smtputf8:
        assert raw.isascii(), "8-bit output without SMTPUTF8"
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    assert not re.search(rb"(^|\r\n)(bcc|resent-bcc|x-postroom-rcpt-to):", head)
    shown = {address_key(a, e.smtputf8)[1] for a in [*e.to, *e.cc, *e.reply_to, *e.read_receipt]}
    shown.add(address_key(e.from_ or "", e.smtputf8)[1])
    for hidden in {address_key(a, e.smtputf8)[1] for a in e.bcc} - shown:
        assert hidden.encode() not in raw.split(b"\r\n\r\n", 1)[0], f"{hidden} shown"


def stdlib_parse(raw: bytes, smtputf8: bool) -> EmailMessage:
    if smtputf8:
        message = Parser(policy=policy.default).parsestr(raw.decode("utf-8"))
    else:
        message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def stdlib_addresses(message: EmailMessage, name: str) -> list[tuple[str, str]]:
    header = message[name]
    if header is None:
        return []
    # The standard library keeps a space between adjacent encoded-words in a display name
    # (RFC 2047 section 6.2 says to drop it), so names are compared without whitespace here.
    return [("".join(a.display_name.split()), a.addr_spec) for a in header.addresses]


def spaceless(key: tuple[str, str]) -> tuple[str, str]:
    return "".join(key[0].split()), key[1]


def expected_text(e: Email) -> str:
    if e.html and not e.text and e.auto_text:
        return html_to_text(e.html)
    return newlines(e.text)


def check_stdlib(raw: bytes, e: Email) -> None:
    message = stdlib_parse(raw, e.smtputf8)
    for field, header in (("to", "To"), ("cc", "Cc"), ("reply_to", "Reply-To")):
        assert stdlib_addresses(message, header) == [
            spaceless(address_key(a, e.smtputf8)) for a in getattr(e, field)
        ], field
    assert stdlib_addresses(message, "From") == [spaceless(address_key(e.from_ or "", e.smtputf8))]
    assert str(message["Subject"]) == e.subject
    parts = leaves(message)
    plain = [p for p in parts if _is_body(p, "text/plain")]
    html = [p for p in parts if _is_body(p, "text/html")]
    assert newlines("".join(p.get_content() for p in plain)) == expected_text(e)
    assert newlines("".join(p.get_content() for p in html)) == newlines(e.html)
    attached = [p for p in parts if p.get_filename() is not None]
    assert sorted(p.get_filename() or "" for p in attached) == sorted(
        a.filename for a in e.attachments
    )
    contents = [
        (p.get_filename() or "", p.get_payload(decode=True))
        for p in attached
        if p.get_content_type() != "message/rfc822"
    ]
    assert sorted(c for c in contents if c[0] in dict(files(e.attachments, e))) == files(
        e.attachments, e
    )


def leaves(part: EmailMessage) -> list[EmailMessage]:
    """The parts of the message itself, not descending into a forwarded message."""
    if not part.is_multipart() or part.get_content_type() == "message/rfc822":
        return [part]
    return [leaf for child in part.iter_parts() for leaf in leaves(child)]  # type: ignore[arg-type]


def _is_body(part: EmailMessage, content_type: str) -> bool:
    return part.get_content_type() == content_type and part.get_filename() is None


def check_postroom(raw: bytes, e: Email) -> None:
    copy = Email.from_bytes(raw)
    for field in ("to", "cc", "reply_to"):
        assert [address_key(a, e.smtputf8) for a in getattr(copy, field)] == [
            address_key(a, e.smtputf8) for a in getattr(e, field)
        ], field
    assert address_key(copy.from_ or "", e.smtputf8) == address_key(e.from_ or "", e.smtputf8)
    assert copy.bcc == []
    assert copy.subject == e.subject
    assert newlines(copy.text) == expected_text(e)
    assert newlines(copy.html) == newlines(e.html)
    assert sorted(a.filename for a in copy.attachments) == sorted(a.filename for a in e.attachments)
    assert files(copy.attachments, e) == files(e.attachments, e)


def files(items: list[Any], e: Email) -> list[tuple[str, bytes]]:
    """(file name, content) of every attachment but forwarded messages, which are read back
    re-serialised; sorted, since inline parts move next to the HTML."""
    forwarded = {a.filename for a in e.attachments if a.content_type == "message/rfc822"}
    return sorted((a.filename, a.content) for a in items if a.filename not in forwarded)
