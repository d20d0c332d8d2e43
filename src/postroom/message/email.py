"""The Email class: build, check, render, parse and queue one message."""

from __future__ import annotations

import os
from base64 import b64encode
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from postroom.errors import MessageError, ParseError
from postroom.message.addresses import parse_address
from postroom.message.attachment import Attachment, guess_content_type
from postroom.message.headers import check_headers, check_message_id, check_value
from postroom.message.schedule import due_at, due_in
from postroom.message.serialize import VERSION

if TYPE_CHECKING:
    from postroom.client import Outbox

__all__ = ["AddressInput", "Email"]

#: what address fields accept: one address, several, or nothing
AddressInput = str | Iterable[str] | None

_NO_SEND = (
    "Email has no send(): postroom sends asynchronously. Use e.enqueue() to send now, "
    "e.send_later('5m') to send after a delay, or e.send_at(when) to send at a time."
)


def _check_body(field: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise MessageError(f"{field} must be a string or None, not {type(value).__name__}")
    return value


def _check_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise MessageError(f"{field} must be True or False, not {value!r}")
    return value


class Email:
    """An email message, "for humans".

    Every field is a keyword of the constructor and a plain attribute; both check the value at
    once (a bad address, a CR/LF in a header, an unknown type) and raise a
    :class:`~postroom.errors.MessageError` subclass naming the problem. Lists can also be
    changed in place; :meth:`validate` and :meth:`to_bytes` check everything again.

    >>> e = Email(from_="Ana <ana@example.com>", to="bo@example.com", subject="Hi", text="Hello")
    >>> e.envelope_recipients
    ['bo@example.com']

    Identity: the Message-ID and Date are generated once (on first use of :attr:`message_id`,
    :attr:`date`, :meth:`ensure_identity`, :meth:`to_bytes` or :meth:`to_dict`) and then stay
    the same on every render, through the queue and every retry.

    There is no synchronous ``send()``: use :meth:`enqueue`, :meth:`send_later` or
    :meth:`send_at`.
    """

    __slots__ = (
        "_attachments",
        "_auto_text",
        "_bcc",
        "_cc",
        "_date",
        "_date_iso",
        "_from",
        "_headers",
        "_html",
        "_message_id",
        "_priority",
        "_read_receipt",
        "_reply_to",
        "_sender",
        "_smtputf8",
        "_subject",
        "_text",
        "_to",
    )
    _attachments: list[Attachment]
    _auto_text: bool
    _bcc: list[str]
    _cc: list[str]
    _date: datetime | None
    _date_iso: str | None
    _from: str | None
    _headers: dict[str, str]
    _html: str | None
    _message_id: str | None
    _priority: int
    _read_receipt: list[str]
    _reply_to: list[str]
    _sender: str | None
    _smtputf8: bool
    _subject: str
    _text: str | None
    _to: list[str]

    def __init__(
        self,
        *,
        from_: str | None = None,
        to: AddressInput = None,
        cc: AddressInput = None,
        bcc: AddressInput = None,
        reply_to: AddressInput = None,
        subject: str = "",
        text: str | None = None,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
        attachments: Iterable[Attachment] | None = None,
        sender: str | None = None,
        read_receipt: AddressInput = None,
        priority: int = 0,
        smtputf8: bool = False,
        auto_text: bool = True,
        message_id: str | None = None,
        date: datetime | None = None,
    ) -> None:
        self._smtputf8 = _check_bool("smtputf8", smtputf8)  # first: address checks depend on it
        self.auto_text = auto_text
        self.from_ = from_
        self.to = to
        self.cc = cc
        self.bcc = bcc
        self.reply_to = reply_to
        self.subject = subject
        self.text = text
        self.html = html
        self.headers = headers
        self.attachments = attachments
        self.sender = sender
        self.read_receipt = read_receipt
        self.priority = priority
        self.message_id = message_id
        self.date = date

    # -- addresses ------------------------------------------------------------------------------
    def _address(self, value: object, field: str) -> str:
        address = parse_address(value, field)
        if not self._smtputf8:
            address.spec(False)  # refuses a non-ASCII local part now rather than at send time
        assert isinstance(value, str)
        return value.strip()

    def _address_list(self, value: AddressInput, field: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return [self._address(value, field)]
        if not isinstance(value, Iterable):
            raise MessageError(f"{field} must be a string or a list of strings, not {value!r}")
        return [self._address(item, field) for item in value]

    @property
    def from_(self) -> str | None:
        """The author: ``"Name <address>"`` or a bare address."""
        return self._from

    @from_.setter
    def from_(self, value: str | None) -> None:
        self._from = None if value is None else self._address(value, "from_")

    @property
    def sender(self) -> str | None:
        """Envelope sender override (SMTP ``MAIL FROM``); ``None`` means the From address."""
        return self._sender

    @sender.setter
    def sender(self, value: str | None) -> None:
        self._sender = None if value is None else self._address(value, "sender")

    @property
    def to(self) -> list[str]:
        return self._to

    @to.setter
    def to(self, value: AddressInput) -> None:
        self._to = self._address_list(value, "to")

    @property
    def cc(self) -> list[str]:
        return self._cc

    @cc.setter
    def cc(self, value: AddressInput) -> None:
        self._cc = self._address_list(value, "cc")

    @property
    def bcc(self) -> list[str]:
        """Blind copies: envelope recipients that never appear in the rendered message."""
        return self._bcc

    @bcc.setter
    def bcc(self, value: AddressInput) -> None:
        self._bcc = self._address_list(value, "bcc")

    @property
    def reply_to(self) -> list[str]:
        return self._reply_to

    @reply_to.setter
    def reply_to(self, value: AddressInput) -> None:
        self._reply_to = self._address_list(value, "reply_to")

    @property
    def read_receipt(self) -> list[str]:
        """Where to send a read receipt (the ``Disposition-Notification-To`` header)."""
        return self._read_receipt

    @read_receipt.setter
    def read_receipt(self, value: AddressInput) -> None:
        self._read_receipt = self._address_list(value, "read_receipt")

    # -- content --------------------------------------------------------------------------------
    @property
    def subject(self) -> str:
        return self._subject

    @subject.setter
    def subject(self, value: str | None) -> None:
        self._subject = "" if value is None else check_value("subject", value)

    @property
    def text(self) -> str | None:
        """The plain-text body. Line endings are rendered as CRLF whatever they are here."""
        return self._text

    @text.setter
    def text(self, value: str | None) -> None:
        self._text = _check_body("text", value)

    @property
    def html(self) -> str | None:
        """The HTML body. With only ``html`` set, a text alternative is generated from it
        unless :attr:`auto_text` is False."""
        return self._html

    @html.setter
    def html(self, value: str | None) -> None:
        self._html = _check_body("html", value)

    @property
    def headers(self) -> dict[str, str]:
        """Extra header fields. From, To, Subject, Date and the MIME headers have their own
        fields and are refused here."""
        return self._headers

    @headers.setter
    def headers(self, value: Mapping[str, str] | None) -> None:
        self._headers = {} if value is None else check_headers(value)

    @property
    def attachments(self) -> list[Attachment]:
        return self._attachments

    @attachments.setter
    def attachments(self, value: Iterable[Attachment] | None) -> None:
        items = [] if value is None else list(value)
        for item in items:
            if not isinstance(item, Attachment):
                raise MessageError(f"attachments must be Attachment objects, not {item!r}")
        self._attachments = items

    @property
    def priority(self) -> int:
        """Queue priority: higher goes first. Not written into the message."""
        return self._priority

    @priority.setter
    def priority(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise MessageError(f"priority must be an int, not {value!r}")
        self._priority = value

    @property
    def smtputf8(self) -> bool:
        """Allow non-ASCII local parts and write UTF-8 headers; the SMTP server must support
        the SMTPUTF8 extension (RFC 6531). Off by default: output is 7-bit ASCII."""
        return self._smtputf8

    @smtputf8.setter
    def smtputf8(self, value: bool) -> None:
        checked = _check_bool("smtputf8", value)
        previous, self._smtputf8 = getattr(self, "_smtputf8", checked), checked
        try:
            self._check_addresses()  # turning it off re-checks every address
        except MessageError:
            self._smtputf8 = previous
            raise

    @property
    def auto_text(self) -> bool:
        """Generate the text alternative from ``html`` when ``text`` is empty (default True)."""
        return self._auto_text

    @auto_text.setter
    def auto_text(self, value: bool) -> None:
        self._auto_text = _check_bool("auto_text", value)

    # -- identity -------------------------------------------------------------------------------
    @property
    def message_id(self) -> str:
        """The Message-ID header, with angle brackets, generated on first use."""
        if self._message_id is None:
            from postroom.payload import new_message_id

            domain = "postroom.local"
            if self._from is not None:
                domain = parse_address(self._from, "from_").ascii_domain
            self._message_id = f"<{new_message_id()}@{domain}>"
        return self._message_id

    @message_id.setter
    def message_id(self, value: str | None) -> None:
        self._message_id = None if value is None else check_message_id(value)

    @property
    def date(self) -> datetime:
        """The Date header, timezone-aware, whole seconds, generated (now, UTC) on first use."""
        if self._date is None:
            return self._set_date(datetime.now(UTC))
        return self._date

    @date.setter
    def date(self, value: datetime | None) -> None:
        if value is None:
            self._date = self._date_iso = None
        elif isinstance(value, datetime):
            self._set_date(value)
        else:
            raise MessageError(f"date must be a datetime, not {type(value).__name__}")

    def _set_date(self, value: datetime) -> datetime:
        # naive means local time; a Date header has whole seconds only
        aware = value if value.tzinfo is not None else value.astimezone()
        date = self._date = aware.replace(microsecond=0)
        self._date_iso = date.isoformat()  # to_dict() runs on every enqueue
        return date

    def ensure_identity(self) -> None:
        """Assign the Message-ID and Date now if they are not set yet."""
        _ = self.message_id, self.date

    # -- envelope and checks --------------------------------------------------------------------
    @property
    def envelope_sender(self) -> str:
        """The bare address for SMTP ``MAIL FROM``: :attr:`sender`, else the From address."""
        if self._sender is not None:
            return parse_address(self._sender, "sender").spec(self._smtputf8)
        if self._from is None:
            raise MessageError("the email has no From address: set from_")
        return parse_address(self._from, "from_").spec(self._smtputf8)

    @property
    def envelope_recipients(self) -> list[str]:
        """Bare addresses for SMTP ``RCPT TO``: to + cc + bcc, first spelling of each address
        kept (duplicates are found ignoring case), domains in punycode."""
        seen: set[str] = set()
        recipients: list[str] = []
        for field, values in (("to", self._to), ("cc", self._cc), ("bcc", self._bcc)):
            for value in values:
                spec = parse_address(value, field).spec(self._smtputf8)
                if spec.lower() not in seen:
                    seen.add(spec.lower())
                    recipients.append(spec)
        return recipients

    def validate(self) -> None:
        """Raise a :class:`~postroom.errors.MessageError` subclass if the email cannot be
        rendered and sent: no From, no recipient, an address or header that does not pass."""
        if self._from is None:
            raise MessageError("the email has no From address: set from_")
        self._check_addresses()  # lists may have been changed in place
        if not (self._to or self._cc or self._bcc):
            raise MessageError("the email has no recipient: set to, cc or bcc")
        check_value("subject", self._subject)
        check_headers(self._headers)
        for field, value in (("text", self._text), ("html", self._html)):
            body = _check_body(field, value)
            if body is not None and not body.isascii():
                try:
                    body.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise MessageError(
                        f"{field} is not valid Unicode text ({exc.reason})"
                    ) from None
        content_ids: set[str] = set()
        for attachment in self._attachments:
            if not isinstance(attachment, Attachment):
                raise MessageError(f"attachments must be Attachment objects, not {attachment!r}")
            attachment.__post_init__()  # its fields may have been changed since
            if attachment.content_id is not None:
                if attachment.content_id in content_ids:
                    raise MessageError(f"content_id {attachment.content_id!r} is used twice")
                content_ids.add(attachment.content_id)

    def _check_addresses(self) -> None:
        for field in ("from_", "sender"):
            value = getattr(self, f"_{field.rstrip('_')}", None)
            if value is not None:
                self._address(value, field)
        for field in ("to", "cc", "bcc", "reply_to", "read_receipt"):
            self._address_list(getattr(self, f"_{field}", None), field)

    # -- attachments ----------------------------------------------------------------------------
    def attach(
        self,
        data: bytes | str,
        filename: str,
        content_type: str | None = None,
        inline: bool = False,
        *,
        content_id: str | None = None,
    ) -> Attachment:
        """Attach ``data`` as ``filename`` and return the :class:`Attachment`.

        ``content_type`` is guessed from the file name when not given. With ``inline=True``
        the part gets a Content-ID (``content_id`` or a generated one) for the HTML to show it
        as ``<img src="cid:...">``. A ``str`` is attached as UTF-8.
        """
        if content_type is None:
            content_type = guess_content_type(check_value("attachment filename", filename))
        attachment = Attachment(
            filename=filename,
            content=data.encode("utf-8") if isinstance(data, str) else data,
            content_type=content_type,
            inline=inline,
            content_id=content_id,
        )
        self._attachments.append(attachment)
        return attachment

    def attach_file(
        self,
        path: str | os.PathLike[str],
        content_type: str | None = None,
        inline: bool = False,
        *,
        filename: str | None = None,
    ) -> Attachment:
        """Attach the file at ``path`` (named by its base name unless ``filename`` is given)."""
        source = Path(path)
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise MessageError(f"cannot attach {str(path)!r}: {exc.strerror or exc}") from exc
        return self.attach(data, filename or source.name, content_type, inline)

    # -- rendering, parsing, serialising --------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The message as RFC 5322 bytes: CRLF line endings, 7-bit ASCII (unless
        :attr:`smtputf8`), no line over 998 octets, no Bcc. Validates first."""
        from postroom.message.render import render

        self.validate()
        return render(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Email:
        """Parse an existing message; keeps its Message-ID and Date. Only a message that
        cannot be read at all raises :class:`~postroom.errors.ParseError`."""
        from postroom.message.parse import parse_message

        return parse_message(raw)

    @classmethod
    def from_file(cls, source: str | os.PathLike[str] | BinaryIO) -> Email:
        """Parse a message from a path or a file opened in binary mode."""
        if isinstance(source, str | os.PathLike):
            try:
                raw = Path(source).read_bytes()
            except OSError as exc:
                raise ParseError(f"cannot read {str(source)!r}: {exc.strerror or exc}") from exc
        else:
            raw = source.read()
            if not isinstance(raw, bytes):
                raise ParseError("from_file() needs a file opened in binary mode ('rb')")
        return cls.from_bytes(raw)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe, versioned (``"v": 1``), lossless copy that later changes to the email
        do not affect; assigns the identity first. The format is described in
        :mod:`postroom.message.serialize`. This is on the enqueue hot path: keep it plain."""
        if self._message_id is None or self._date is None:
            self.ensure_identity()
        return {
            "v": VERSION,
            "from": self._from,
            "sender": self._sender,
            "to": self._to[:],
            "cc": self._cc[:],
            "bcc": self._bcc[:],
            "reply_to": self._reply_to[:],
            "read_receipt": self._read_receipt[:],
            "subject": self._subject,
            "text": self._text,
            "html": self._html,
            "headers": self._headers.copy(),
            "priority": self._priority,
            "smtputf8": self._smtputf8,
            "auto_text": self._auto_text,
            "message_id": self._message_id,
            "date": self._date_iso,
            "attachments": [
                {
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "inline": a.inline,
                    "content_id": a.content_id,
                    "content": b64encode(a.content).decode("ascii"),
                }
                for a in self._attachments
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Email:
        """Rebuild an Email from :meth:`to_dict` output; refuses unknown versions and fields."""
        from postroom.message.serialize import from_dict

        return from_dict(data)

    # -- queueing -------------------------------------------------------------------------------
    def enqueue(self, *, outbox: Outbox | None = None) -> str:
        """Queue the email to be sent right away; return the message id."""
        from postroom.client import submit

        return submit(self, send_after=None, outbox=outbox)

    def send_later(self, delay: str | timedelta, *, outbox: Outbox | None = None) -> str:
        """Queue the email to be sent after ``delay`` (``"5m"``, ``"1h30m"`` or a timedelta)."""
        from postroom.client import submit

        return submit(self, send_after=due_in(delay), outbox=outbox)

    def send_at(self, when: datetime, *, outbox: Outbox | None = None) -> str:
        """Queue the email to be sent at ``when`` (naive means local time; past means now)."""
        from postroom.client import submit

        return submit(self, send_after=due_at(when), outbox=outbox)

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> object:
            if name == "send":
                raise AttributeError(_NO_SEND, name=name, obj=self)
            raise AttributeError(f"'Email' object has no attribute {name!r}", name=name, obj=self)

    def __repr__(self) -> str:
        parts = [f"from_={self._from!r}", f"to={self._to!r}"]
        if self._cc:
            parts.append(f"cc={self._cc!r}")
        if self._bcc:
            parts.append(f"bcc={self._bcc!r}")
        parts.append(f"subject={self._subject!r}")
        if self._attachments:
            parts.append(f"attachments={len(self._attachments)}")
        return f"Email({', '.join(parts)})"
