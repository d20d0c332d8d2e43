"""Render an Email as RFC 5322 / MIME bytes.

Only the containers the content needs are used::

    text only                 text/plain
    text + html               multipart/alternative [text/plain, text/html]
    html + inline images      multipart/related [text/html, image...]   (inside the alternative)
    any attachment            multipart/mixed [body, attachment...]     (outermost)

Bodies: text is ``7bit`` when it is plain ASCII with short lines, else ``quoted-printable``;
attachments are ``base64`` in 76-character lines, except a 7-bit ``message/rfc822`` (a forwarded
message), which RFC 2046 requires to stay unencoded. Boundaries are derived from the
Message-ID, so rendering the same Email twice gives the same bytes; they contain ``=_``, which
never occurs in base64 or quoted-printable output, and a 7-bit text body containing ``=_`` is
written as quoted-printable. A forwarded message is written as it is, so every boundary is also
checked against the parts it encloses; if it occurs there, a boundary derived from a hash of
those parts is used instead (still the same on every render). No boundary ever occurs inside
the parts it encloses.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING

from postroom.message.addresses import Address, address_header
from postroom.message.attachment import Attachment, split_content_type
from postroom.message.headers import HARD_LIMIT, fold, unstructured, with_params
from postroom.message.html_text import html_to_text

if TYPE_CHECKING:
    from postroom.message.email import Email

__all__ = ["render"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(slots=True)
class _Leaf:
    headers: str  # header lines, each ending in CRLF
    body: bytes


@dataclass(slots=True)
class _Multi:
    subtype: str
    parts: list[_Leaf | _Multi]


def _seven_bit_ok(text: str) -> bool:
    """Whether ``text`` (LF line endings) can be sent as is in a 7bit part."""
    if not text.isascii() or "=_" in text or _CONTROL.search(text):
        return False
    return len(text) <= HARD_LIMIT or max(map(len, text.split("\n"))) <= HARD_LIMIT


def _text_leaf(subtype: str, text: str) -> _Leaf:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    content_type = f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
    if _seven_bit_ok(text):
        body = text.replace("\n", "\r\n").encode("ascii")
        return _Leaf(content_type + "Content-Transfer-Encoding: 7bit\r\n", body)
    encoded = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    return _Leaf(
        content_type + "Content-Transfer-Encoding: quoted-printable\r\n",
        encoded.replace(b"\n", b"\r\n"),
    )


def _rfc822_body(content: bytes) -> bytes | None:
    """A forwarded message with CRLF line endings (a lone CR or LF ends a line too), or None
    when it is not 7-bit clean."""
    if not content.isascii() or b"\0" in content:
        return None
    lines = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if max(map(len, lines)) > HARD_LIMIT:
        return None
    return b"\r\n".join(lines)


def _attachment_leaf(attachment: Attachment) -> _Leaf:
    main, params = split_content_type(attachment.content_type)
    body: bytes | None = None
    encoding = "7bit"
    if main == "message/rfc822":
        body = _rfc822_body(attachment.content)
        if body is None:  # 8-bit content may not be base64-encoded as message/rfc822
            main, params = "application/octet-stream", []
    if body is None:
        encoding = "base64"
        body = base64.encodebytes(attachment.content).replace(b"\n", b"\r\n")
    params = [(key, value) for key, value in params if key != "name"]
    params.append(("name", attachment.filename))
    disposition = "inline" if attachment.inline else "attachment"
    headers = [
        with_params("Content-Type", main, params),
        with_params("Content-Disposition", disposition, [("filename", attachment.filename)]),
        f"Content-Transfer-Encoding: {encoding}\r\n",
    ]
    if attachment.content_id is not None:
        headers.append(f"Content-ID: <{attachment.content_id}>\r\n")
    return _Leaf("".join(headers), body)


def _body_node(email: Email) -> _Leaf | _Multi | None:
    """The text/html part of the message, or None when it has neither."""
    text, html = email.text or "", email.html or ""
    if html and not text and email.auto_text:
        text = html_to_text(html)
    if not html:
        return _text_leaf("plain", text) if text else None
    html_node: _Leaf | _Multi = _text_leaf("html", html)
    inline = [a for a in email.attachments if a.inline]
    if inline:
        html_node = _Multi("related", [html_node, *map(_attachment_leaf, inline)])
    if not text:
        return html_node
    return _Multi("alternative", [_text_leaf("plain", text), html_node])


def _structure(email: Email) -> _Leaf | _Multi:
    body = _body_node(email)
    show_inline = bool(email.html)  # inline parts live in the related part then
    others = [a for a in email.attachments if not (a.inline and show_inline)]
    if not others:
        return body if body is not None else _text_leaf("plain", "")
    parts = [] if body is None else [body]
    return _Multi("mixed", parts + [_attachment_leaf(a) for a in others])


@functools.lru_cache(maxsize=256)
def _date_value(second: datetime, offset: timedelta | None) -> str:
    """The Date header of a time (whole seconds): emails queued in the same second share it.

    ``offset`` is part of the key because two times of one instant in different zones are
    equal, yet are written with their own local time and offset.
    """
    return format_datetime(second)


@functools.lru_cache(maxsize=256)
def _from_header(author: Address, smtputf8: bool) -> str:
    """The From header of an author: most emails of an application share a few authors."""
    return address_header("From", [author], smtputf8)


def _top_headers(email: Email) -> list[str]:
    utf8 = email.smtputf8
    known = email.address_of
    lines = [_from_header(known(email.from_ or "", "from_"), utf8)]
    to = [known(value, "to") for value in email.to]
    cc = [known(value, "cc") for value in email.cc]
    if to:
        lines.append(address_header("To", to, utf8))
    if cc:
        lines.append(address_header("Cc", cc, utf8))
    if not (to or cc):
        lines.append("To: undisclosed-recipients:;\r\n")
    if email.reply_to:
        reply_to = [known(value, "reply_to") for value in email.reply_to]
        lines.append(address_header("Reply-To", reply_to, utf8))
    lines.append(unstructured("Subject", email.subject, utf8))
    date = email.date
    second = date.replace(microsecond=0) if date.microsecond else date
    lines.append(f"Date: {_date_value(second, date.utcoffset())}\r\n")
    lines.append(fold("Message-ID", [email.message_id]))
    if email.read_receipt:
        receipt = [known(value, "read_receipt") for value in email.read_receipt]
        lines.append(address_header("Disposition-Notification-To", receipt, utf8))
    lines += [unstructured(name, value, utf8) for name, value in email.headers.items()]
    lines.append("MIME-Version: 1.0\r\n")
    return lines


def _emit(node: _Leaf | _Multi, seed: str, counter: Iterator[int]) -> list[bytes]:
    """``node``'s content headers, the blank line and its body, as chunks to join.

    A boundary is searched for in the joined chunks of the parts it encloses.
    """
    if isinstance(node, _Leaf):
        return [node.headers.encode("ascii") + b"\r\n", node.body]
    index = next(counter)  # numbered before the children: the outermost part is 0
    children = [_emit(part, seed, counter) for part in node.parts]
    boundary = _boundary(seed, index, children)
    out = [b"Content-Type: multipart/" + node.subtype.encode("ascii") + b";\r\n"]
    out.append(b' boundary="' + boundary + b'"\r\n\r\n')
    for child in children:
        out.append(b"--" + boundary + b"\r\n")
        out += child
        out.append(b"\r\n")
    out.append(b"--" + boundary + b"--\r\n")
    return out


def _boundary(seed: str, index: int, children: list[list[bytes]]) -> bytes:
    """``=_<seed>.<index>``, unless that occurs in the enclosed parts (a forwarded message may
    hold anything, and the Message-ID the seed comes from may be chosen by anyone): then one
    derived from a hash of the parts too, which no content can foresee. Same input, same bytes.
    """
    boundary = f"=_{seed}.{index}".encode("ascii")
    enclosed = b"".join([chunk for child in children for chunk in child])
    if boundary not in enclosed:
        return boundary
    digest = hashlib.blake2b(seed.encode("ascii"), digest_size=12)
    digest.update(enclosed)
    for attempt in itertools.count():
        boundary = f"=_{digest.hexdigest()}.{index}.{attempt}".encode("ascii")
        if boundary not in enclosed:
            return boundary
    raise AssertionError("unreachable")  # pragma: no cover - itertools.count() never ends


def render(email: Email) -> bytes:
    """The rendered message; ``email`` must have passed ``validate()``."""
    head = "".join(_top_headers(email))
    seed = hashlib.blake2b(email.message_id.encode("ascii"), digest_size=9).hexdigest()
    body = _emit(_structure(email), seed, itertools.count())
    return b"".join([head.encode("utf-8" if email.smtputf8 else "ascii"), *body])
