"""Read existing messages into Emails, as well as they can be read.

The standard library parser (``email.policy.default``) does the MIME work; this module maps its
result onto Email fields and forgives what real mail gets wrong:

* the first ``text/plain`` and ``text/html`` parts that are not attachments are the bodies
  (further ones are appended, as clients split bodies around inline images); line endings
  become ``\\n``; an unknown or wrong charset falls back to UTF-8, then Latin-1;
* every other leaf part is an attachment; it is ``inline`` when it has a Content-ID and is
  marked inline (or has no disposition inside multipart/related); a part without a file name
  gets one (``attachment-2.pdf``, ``<subject>.eml`` for a forwarded message);
* an address that does not parse is skipped; a header with a line break inside (possible
  after RFC 2047 decoding) gets spaces instead; trace headers (Received, DKIM-Signature, ...)
  are dropped, and so are ``Resent-Bcc`` and the ``X-Postroom-Rcpt-To`` envelope line of a
  captured ``.eml`` (both name blind recipients); other extra headers are kept (the first one of
  each name);
* the Message-ID and Date are kept, so re-rendering keeps the message's identity.

Only input that is not a message at all (empty, no header) raises :class:`ParseError`.
"""

from __future__ import annotations

import mimetypes
import re
from datetime import UTC, datetime
from email import policy
from email.generator import BytesGenerator
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import collapse_rfc2231_value, getaddresses
from io import BytesIO
from typing import TYPE_CHECKING

from postroom.errors import MessageError, ParseError
from postroom.message.addresses import CONTROL, Address, parse_address
from postroom.message.attachment import Attachment, check_content_id, split_content_type
from postroom.message.headers import BLIND_HEADERS

if TYPE_CHECKING:
    from postroom.message.email import Email

__all__ = ["parse_message"]

# fmt: off
_OWN_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id",
    "disposition-notification-to", "mime-version", "content-type", "content-transfer-encoding",
    "content-disposition",
})
_TRACE_HEADERS = frozenset({
    "received", "return-path", "delivered-to", "x-original-to", "dkim-signature",
    "domainkey-signature", "authentication-results", "received-spf", "x-received",
})
# fmt: on
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+>")
# RFC 2047 section 6.2: whitespace between adjacent encoded-words is not part of the text. The
# standard library keeps it inside display names, so it is removed before they are parsed.
_ENCODED_WORD = r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?="
_BETWEEN_WORDS = re.compile(rf"({_ENCODED_WORD})\s+(?={_ENCODED_WORD})")
_NEWLINES = re.compile(r"\r?\n")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


def _clean(value: str) -> str:
    """Undo the parser's surrogate escapes (raw UTF-8 bytes) and remove line breaks."""
    if not value.isascii():
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "\r" in value or "\n" in value:
        value = re.sub(r"[\r\n]+", " ", value)
    return value


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
        return "" if value is None else _clean(str(value))
    except Exception:  # a header broken beyond the parser's own repairs
        return ""


def _address_pairs(raw: str) -> list[tuple[str, str]]:
    """(display name, addr-spec) pairs of one raw address-list header value."""
    value = _NEWLINES.sub("", _BETWEEN_WORDS.sub(r"\1", raw))
    try:
        header = policy.default.header_factory("to", value)  # the address-list grammar
        return [(a.display_name, a.addr_spec) for a in getattr(header, "addresses", ())]
    except Exception:  # the parser's own objects can fail on very broken input
        return getaddresses([value])


def _address_strings(message: Message, name: str) -> list[str]:
    """Every address of every ``name`` header that parses, as ``Name <addr>`` strings."""
    found: list[str] = []
    for key, raw in message.raw_items():
        if key.lower() != name.lower():
            continue
        for display, spec in _address_pairs(str(raw)):
            spec, display = _clean(spec), CONTROL.sub(" ", _clean(display)).strip()
            try:
                bare = parse_address(spec)
            except MessageError:
                continue
            found.append(str(Address(display, bare.local, bare.domain, bare.ascii_domain)))
    return found


def _date(message: Message) -> datetime | None:
    try:
        header = message.get("Date")
        value = getattr(header, "datetime", None)
    except Exception:
        return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _message_id(message: Message) -> str | None:
    """The Message-ID in angle brackets; a bare ``id@domain`` (a common mistake) is wrapped."""
    value = _header(message, "Message-ID")
    match = _MESSAGE_ID.search(value) or _MESSAGE_ID.fullmatch(f"<{value}>")
    return match.group(0) if match and len(match.group(0)) <= 900 else None


def _extra_headers(message: Message) -> dict[str, str]:
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for name in message:
        lowered = name.lower()
        if lowered in _OWN_HEADERS or lowered in _TRACE_HEADERS or lowered in BLIND_HEADERS:
            continue
        if lowered.startswith("arc-"):
            continue
        if lowered in seen or not re.fullmatch(r"[!-9;-~]{1,200}", name):
            continue
        seen.add(lowered)
        headers[name] = _header(message, name)
    return headers


class _Walker:
    """Collects bodies and attachments from a MIME tree."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[Attachment] = []

    def walk(self, part: Message, in_related: bool = False) -> None:
        content_type = part.get_content_type()
        if content_type == "message/rfc822" or not part.is_multipart():
            self.leaf(part, in_related)
            return
        related = content_type == "multipart/related"
        for child in part.get_payload():
            if isinstance(child, Message):
                self.walk(child, related)

    def leaf(self, part: Message, in_related: bool) -> None:
        content_type = part.get_content_type()
        disposition = part.get_content_disposition()
        filename = _clean(part.get_filename() or "")
        filename = filename if filename.strip() else ""
        if content_type.startswith("multipart/"):  # no boundary: read it as plain text
            content_type = "text/plain"
        is_body = disposition != "attachment" and not filename
        if is_body and content_type in ("text/plain", "text/html"):
            target = self.texts if content_type == "text/plain" else self.htmls
            target.append(_decode_text(part))
            return
        self.attachments.append(self.attachment(part, filename, disposition, in_related))

    def attachment(
        self, part: Message, filename: str, disposition: str | None, in_related: bool
    ) -> Attachment:
        content_type = _content_type(part)
        if part.get_content_type() == "message/rfc822":
            content = _inner_message(part)
            default_name = _safe_name(_inner_subject(part) or "message") + ".eml"
        else:
            payload = part.get_payload(decode=True)
            content = payload if isinstance(payload, bytes) else b""
            extension = mimetypes.guess_extension(part.get_content_type(), strict=False) or ""
            default_name = f"attachment-{len(self.attachments) + 1}{extension}"
        try:
            content_id: str | None = check_content_id(_header(part, "Content-ID"))
        except MessageError:
            content_id = None
        inline = content_id is not None and (
            disposition == "inline" or (disposition is None and in_related)
        )
        return Attachment(
            filename=filename or default_name,
            content=content,
            content_type=content_type,
            inline=inline,
            content_id=content_id,
        )


def _decode_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset() or "us-ascii"
    for candidate in (charset, "utf-8"):
        try:
            text = raw.decode(candidate)
            break
        except (LookupError, UnicodeDecodeError):
            continue
    else:
        text = raw.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _content_type(part: Message) -> str:
    """The part's content type with its parameters, minus the file name and boundary."""
    params = []
    for key, raw in part.get_params(failobj=[])[1:]:
        if key.lower() in ("name", "boundary"):
            continue
        value = _clean(collapse_rfc2231_value(raw))  # an RFC 2231 value comes as a tuple
        if not _TOKEN.match(value):
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        params.append(f"{key.lower()}={value}")
    text = "; ".join([part.get_content_type(), *params])
    try:
        split_content_type(text)
    except MessageError:
        return part.get_content_type()
    return text


def _inner_message(part: Message) -> bytes:
    """The bytes of a forwarded message (message/rfc822 part), CRLF line endings."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        buffer = BytesIO()
        generator_policy = policy.compat32.clone(linesep="\r\n")
        BytesGenerator(buffer, mangle_from_=False, policy=generator_policy).flatten(payload[0])
        return buffer.getvalue()
    raw = part.get_payload(decode=True)
    return raw if isinstance(raw, bytes) else b""


def _inner_subject(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return _header(payload[0], "Subject")
    return ""


def _safe_name(name: str) -> str:
    return _UNSAFE_NAME.sub("_", name).strip(" .")[:100] or "message"


def _read(raw: bytes) -> EmailMessage:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ParseError(f"a raw message must be bytes, not {type(raw).__name__}")
    data = bytes(raw)
    if not data.strip():
        raise ParseError("the message is empty")
    try:
        message = BytesParser(policy=policy.default).parsebytes(data)
    except Exception as exc:  # the parser gave up: nothing to salvage
        raise ParseError(f"the message cannot be parsed: {exc}") from exc
    if not isinstance(message, EmailMessage) or not message.keys():
        raise ParseError("no header found: this is not an email message")
    return message


def parse_message(raw: bytes) -> Email:
    """Parse ``raw`` (CRLF or LF line endings) into an Email; see the module docstring."""
    from postroom.message.email import Email

    message = _read(raw)
    walker = _Walker()
    walker.walk(message)
    addresses = {
        field: _address_strings(message, header)
        for field, header in (
            ("to", "To"),
            ("cc", "Cc"),
            ("bcc", "Bcc"),
            ("reply_to", "Reply-To"),
            ("read_receipt", "Disposition-Notification-To"),
        )
    }
    senders = _address_strings(message, "From")
    everyone = [*senders, *(value for values in addresses.values() for value in values)]
    text = "\n".join(walker.texts) if walker.texts else None
    html = "\n".join(walker.htmls) if walker.htmls else None
    try:
        return Email(
            smtputf8=any(not parse_address(value).local.isascii() for value in everyone),
            from_=senders[0] if senders else None,
            to=addresses["to"],
            cc=addresses["cc"],
            bcc=addresses["bcc"],
            reply_to=addresses["reply_to"],
            read_receipt=addresses["read_receipt"],
            subject=_header(message, "Subject"),
            text=text,
            html=html,
            auto_text=not (html and text is None),  # keep an html-only message html-only
            headers=_extra_headers(message),
            attachments=walker.attachments,
            message_id=_message_id(message),
            date=_date(message),
        )
    except MessageError as exc:  # every field was repaired above; this is a last resort
        raise ParseError(f"the message cannot be read: {exc}") from exc
