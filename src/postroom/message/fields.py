"""The fields of an Email, each checked when it is set (constructor keyword or assignment)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from postroom.errors import AddressError, MessageError
from postroom.message.addresses import Address, parse_address
from postroom.message.attachment import Attachment
from postroom.message.headers import check_headers, check_message_id, check_value
from postroom.payload import new_message_id

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


# (whole second, its UTC datetime, its isoformat()): emails dated in the same second share one
# immutable datetime and its text, so a Date costs a clock read on the enqueue hot path
_this_second: tuple[int, datetime, str] = (-1, datetime.fromtimestamp(0, UTC), "")


def _now_whole_second() -> tuple[datetime, str]:
    global _this_second
    second = int(time.time())
    cached = _this_second
    if cached[0] != second:
        date = datetime.fromtimestamp(second, UTC)
        cached = _this_second = (second, date, date.isoformat())
    return cached[1], cached[2]


class EmailFields:
    """The data of an :class:`~postroom.message.Email`; see there for the behaviour.

    Every setter checks its value and raises a :class:`~postroom.errors.MessageError`
    subclass naming the problem; lists are stored as given (stripped strings) and may be
    changed in place, which :meth:`Email.validate` checks again.

    Each address list and the headers keep a copy of their contents as last checked (the
    ``*_checked`` slots): :meth:`_recheck_changed` parses again only a container that no longer
    equals its copy, which keeps ``validate()`` on the enqueue hot path cheap. Every address in
    a copy passes under the current :attr:`smtputf8` (turning it off re-checks them all).
    """

    __slots__ = (
        "_attachments",
        "_auto_text",
        "_bcc",
        "_bcc_checked",
        "_cc",
        "_cc_checked",
        "_date",
        "_date_iso",
        "_from",
        "_from_address",
        "_headers",
        "_headers_checked",
        "_html",
        "_known",
        "_message_id",
        "_priority",
        "_read_receipt",
        "_read_receipt_checked",
        "_reply_to",
        "_reply_to_checked",
        "_sender",
        "_smtputf8",
        "_subject",
        "_text",
        "_to",
        "_to_checked",
    )
    _attachments: list[Attachment]
    _auto_text: bool
    _bcc: list[str]
    _bcc_checked: list[str]
    _cc: list[str]
    _cc_checked: list[str]
    _date: datetime | None
    _date_iso: str | None
    _from: str | None
    _from_address: Address | None
    _headers: dict[str, str]
    _headers_checked: dict[str, str]
    _html: str | None
    _known: dict[str, Address]
    _message_id: str | None
    _priority: int
    _read_receipt: list[str]
    _read_receipt_checked: list[str]
    _reply_to: list[str]
    _reply_to_checked: list[str]
    _sender: str | None
    _smtputf8: bool
    _subject: str
    _text: str | None
    _to: list[str]
    _to_checked: list[str]

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
        self._known = {}
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
    def _parsed(self, value: object, field: str) -> Address:
        address = parse_address(value, field)
        if not self._smtputf8 and not address.local.isascii():
            try:
                address.spec(False)  # refuses a non-ASCII local part now, not at send time
            except AddressError as exc:
                raise AddressError(f"{field}: {exc}") from None
        assert isinstance(value, str)
        self._known[value.strip()] = address
        return address

    def address_of(self, value: str, field: str) -> Address:
        """The parsed form of ``value``, an address of this email: the one its check parsed
        (rendering needs them all again), else parsed now."""
        known = self._known.get(value)
        return known if known is not None else parse_address(value, field)

    def _address(self, value: object, field: str) -> str:
        self._parsed(value, field)
        assert isinstance(value, str)
        return value.strip()

    def _address_list(self, value: AddressInput, field: str) -> list[str]:
        if value is None:
            return []
        if type(value) is list:  # the common case, checked before the slower ABC test below
            return [self._address(item, field) for item in value] if value else []
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
        if value is None:
            self._from = self._from_address = None
        else:
            address = self._parsed(value, "from_")  # kept: the Message-ID needs its domain
            assert isinstance(value, str)
            self._from, self._from_address = value.strip(), address

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
        self._to_checked = self._to[:]

    @property
    def cc(self) -> list[str]:
        return self._cc

    @cc.setter
    def cc(self, value: AddressInput) -> None:
        self._cc = self._address_list(value, "cc")
        self._cc_checked = self._cc[:]

    @property
    def bcc(self) -> list[str]:
        """Blind copies: envelope recipients that never appear in the rendered message."""
        return self._bcc

    @bcc.setter
    def bcc(self, value: AddressInput) -> None:
        self._bcc = self._address_list(value, "bcc")
        self._bcc_checked = self._bcc[:]

    @property
    def reply_to(self) -> list[str]:
        return self._reply_to

    @reply_to.setter
    def reply_to(self, value: AddressInput) -> None:
        self._reply_to = self._address_list(value, "reply_to")
        self._reply_to_checked = self._reply_to[:]

    @property
    def read_receipt(self) -> list[str]:
        """Where to send a read receipt (the ``Disposition-Notification-To`` header)."""
        return self._read_receipt

    @read_receipt.setter
    def read_receipt(self, value: AddressInput) -> None:
        self._read_receipt = self._address_list(value, "read_receipt")
        self._read_receipt_checked = self._read_receipt[:]

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
        self._headers = {} if value is None or value == {} else check_headers(value)
        self._headers_checked = self._headers.copy()

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
        if not -(2**31) <= value < 2**31:  # the databases store it in 32 bits
            raise MessageError(f"priority {value} is out of range (-2147483648 to 2147483647)")
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
            address = self._from_address
            domain = "postroom.local" if address is None else address.ascii_domain
            self._message_id = f"<{new_message_id()}@{domain}>"
        return self._message_id

    @message_id.setter
    def message_id(self, value: str | None) -> None:
        self._message_id = None if value is None else check_message_id(value)

    @property
    def date(self) -> datetime:
        """The Date header, timezone-aware, whole seconds, generated (now, UTC) on first use."""
        if self._date is None:
            self._date, self._date_iso = _now_whole_second()
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
        try:
            aware = value if value.tzinfo is not None else value.astimezone()
        except (OverflowError, OSError, ValueError):  # a local time past the ends of the calendar
            raise MessageError(f"date {value.isoformat()} cannot be given a time zone") from None
        date = self._date = aware.replace(microsecond=0)
        self._date_iso = date.isoformat()  # to_dict() runs on every enqueue
        return date

    def _check_addresses(self) -> None:
        """Check every address again, whatever was checked before."""
        for field in ("from_", "sender"):
            value = getattr(self, f"_{field.rstrip('_')}", None)
            if value is not None:
                self._address(value, field)
        for field in ("to", "cc", "bcc", "reply_to", "read_receipt"):
            self._address_list(getattr(self, f"_{field}", None), field)

    def _recheck_changed(self) -> None:
        """Check again the address lists and headers changed in place since their last check.

        From and sender are strings, which cannot change in place; the setters checked them.
        Comparing a list with its copy costs far less than parsing its addresses again.
        """
        if self._to != self._to_checked:
            self._to_checked = self._recheck_list(self._to, "to")
        if self._cc != self._cc_checked:
            self._cc_checked = self._recheck_list(self._cc, "cc")
        if self._bcc != self._bcc_checked:
            self._bcc_checked = self._recheck_list(self._bcc, "bcc")
        if self._reply_to != self._reply_to_checked:
            self._reply_to_checked = self._recheck_list(self._reply_to, "reply_to")
        if self._read_receipt != self._read_receipt_checked:
            self._read_receipt_checked = self._recheck_list(self._read_receipt, "read_receipt")
        if self._headers != self._headers_checked:
            check_headers(self._headers)
            self._headers_checked = self._headers.copy()

    def _recheck_list(self, values: list[str], field: str) -> list[str]:
        """Check every address of ``values``; return the copy to compare with next time."""
        for value in values:
            self._parsed(value, field)
        return values[:]
