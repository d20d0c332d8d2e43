"""The fields of an Email, each checked when it is set (constructor keyword or assignment)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from postroom.errors import MessageError
from postroom.message.addresses import parse_address
from postroom.message.attachment import Attachment
from postroom.message.headers import check_headers, check_message_id, check_value

__all__ = ["AddressInput", "EmailFields", "check_body"]

#: what address fields accept: one address, several, or nothing
AddressInput = str | Iterable[str] | None


def check_body(field: str, value: object) -> str | None:
    """Return ``value`` if it can be a body (a string or None), else raise MessageError."""
    if value is not None and not isinstance(value, str):
        raise MessageError(f"{field} must be a string or None, not {type(value).__name__}")
    return value


def _check_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise MessageError(f"{field} must be True or False, not {value!r}")
    return value


class EmailFields:
    """The data of an :class:`~postroom.message.Email`; see there for the behaviour.

    Every setter checks its value and raises a :class:`~postroom.errors.MessageError`
    subclass naming the problem; lists are stored as given (stripped strings) and may be
    changed in place, which :meth:`Email.validate` checks again.
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
        self._text = check_body("text", value)

    @property
    def html(self) -> str | None:
        """The HTML body. With only ``html`` set, a text alternative is generated from it
        unless :attr:`auto_text` is False."""
        return self._html

    @html.setter
    def html(self, value: str | None) -> None:
        self._html = check_body("html", value)

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

    def _check_addresses(self) -> None:
        for field in ("from_", "sender"):
            value = getattr(self, f"_{field.rstrip('_')}", None)
            if value is not None:
                self._address(value, field)
        for field in ("to", "cc", "bcc", "reply_to", "read_receipt"):
            self._address_list(getattr(self, f"_{field}", None), field)
