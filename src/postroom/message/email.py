"""The Email class: build, check, render, parse and queue one message."""

from __future__ import annotations

import json
import os
from base64 import b64encode
from collections.abc import Mapping
from datetime import datetime, timedelta
from json.encoder import encode_basestring as _json_str  # what json.dumps uses for strings
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import postroom.client  # looked up per call, not bound here: tests replace postroom.client.submit
from postroom.errors import MessageError, ParseError
from postroom.message.addresses import parse_address
from postroom.message.attachment import Attachment, guess_content_type
from postroom.message.fields import EmailFields, check_body
from postroom.message.headers import check_value
from postroom.message.render import render
from postroom.message.schedule import due_at, due_in
from postroom.message.serialize import VERSION, from_dict

if TYPE_CHECKING:
    from postroom.client import Outbox

__all__ = ["Email"]

# the settings of the queue payload (postroom.payload): UTF-8 kept, no spaces
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

_NO_SEND = (
    "Email has no send(): postroom sends asynchronously. Use e.enqueue() to send now, "
    "e.send_later('5m') to send after a delay, or e.send_at(when) to send at a time"
)


class _NoSendError(AttributeError):
    """``e.send()``: the interpreter names the missing attribute on every AttributeError it
    passes on, and the traceback then suggests ``sender``. This one keeps no name, and shows as
    the plain AttributeError it is."""

    __module__ = "builtins"
    __qualname__ = "AttributeError"

    @property
    def name(self) -> None:
        return None

    @name.setter
    def name(self, value: object) -> None:
        pass


class Email(EmailFields):
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

    __slots__ = ()

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
        self._recheck_changed()  # lists and headers may have been changed in place
        if not (self._to or self._cc or self._bcc):
            raise MessageError("the email has no recipient: set to, cc or bcc")
        # From, sender and subject are strings, checked by their setters (strings cannot be
        # changed in place); an ASCII body is valid text (str.isascii() is O(1)).
        text, html = self._text, self._html
        if not ((text is None or text.isascii()) and (html is None or html.isascii())):
            self._check_bodies()
        if self._attachments:
            self._check_attachments()

    def _check_bodies(self) -> None:
        for field, value in (("text", self._text), ("html", self._html)):
            body = check_body(field, value)
            if body is not None and not body.isascii():
                try:
                    body.encode("utf-8")
                except UnicodeEncodeError as exc:
                    reason = exc.reason
                    raise MessageError(f"{field} is not valid Unicode text ({reason})") from None

    def _check_attachments(self) -> None:
        content_ids: set[str] = set()
        for attachment in self._attachments:
            if not isinstance(attachment, Attachment):
                raise MessageError(f"attachments must be Attachment objects, not {attachment!r}")
            attachment.__post_init__()  # its fields may have been changed since
            if attachment.content_id is not None:
                if attachment.content_id in content_ids:
                    raise MessageError(f"content_id {attachment.content_id!r} is used twice")
                content_ids.add(attachment.content_id)

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
        :mod:`postroom.message.serialize`."""
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
            "attachments": self._attachment_dicts(),
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as compact JSON text: exactly ``json.dumps(e.to_dict(),
        ensure_ascii=False, separators=(",", ":"))``; assigns the identity first.

        ``enqueue()`` snapshots the email this way, in the caller's thread. Written field by
        field it costs about what building the dict costs, and leaves the pusher thread no
        encoding to do, so keep it plain.
        """
        if self._message_id is None or self._date is None:
            self.ensure_identity()
        try:
            return self._json_text()
        except TypeError:  # a list item changed in place into something that is not a string
            return _JSON.encode(self.to_dict())

    def _json_text(self) -> str:
        # Spelled out with inline conditions: this runs on every enqueue().
        s, lst, enc = _json_str, _json_list, _JSON.encode
        message_id, date = self._message_id, self._date_iso
        assert message_id is not None and date is not None  # to_json() assigned them
        return (
            f'{{"v":{VERSION},"from":{"null" if self._from is None else s(self._from)},'
            f'"sender":{"null" if self._sender is None else s(self._sender)},'
            f'"to":{lst(self._to) if self._to else "[]"},'
            f'"cc":{lst(self._cc) if self._cc else "[]"},'
            f'"bcc":{lst(self._bcc) if self._bcc else "[]"},'
            f'"reply_to":{lst(self._reply_to) if self._reply_to else "[]"},'
            f'"read_receipt":{lst(self._read_receipt) if self._read_receipt else "[]"},'
            f'"subject":{s(self._subject)},'
            f'"text":{"null" if self._text is None else s(self._text)},'
            f'"html":{"null" if self._html is None else s(self._html)},'
            f'"headers":{enc(self._headers) if self._headers else "{}"},'
            f'"priority":{self._priority:d},'
            f'"smtputf8":{"true" if self._smtputf8 else "false"},'
            f'"auto_text":{"true" if self._auto_text else "false"},'
            f'"message_id":{s(message_id)},"date":{s(date)},'
            f'"attachments":{enc(self._attachment_dicts()) if self._attachments else "[]"}}}'
        )

    def _attachment_dicts(self) -> list[dict[str, Any]]:
        return [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "inline": a.inline,
                "content_id": a.content_id,
                "content": b64encode(a.content).decode("ascii"),
            }
            for a in self._attachments
        ]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Email:
        """Rebuild an Email from :meth:`to_dict` output; refuses unknown versions and fields."""
        return from_dict(data, cls)

    # -- queueing -------------------------------------------------------------------------------
    def enqueue(self, *, outbox: Outbox | None = None, idempotency_key: str | None = None) -> str:
        """Queue the email to be sent right away; return the message id.

        With ``idempotency_key``, the id is derived from the key: queueing again with the same
        key (in any process, on any machine sharing the database) returns the same id and
        sends nothing more, until the message's row is purged. The first email queued with a
        key is the one sent; a later one with the same key is dropped whatever its content.
        """
        return postroom.client.submit(
            self, send_after=None, outbox=outbox, idempotency_key=idempotency_key
        )

    def send_later(
        self,
        delay: str | timedelta,
        *,
        outbox: Outbox | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Queue the email to be sent after ``delay`` (``"5m"``, ``"1h30m"`` or a timedelta).

        ``idempotency_key``: see :meth:`enqueue`."""
        return postroom.client.submit(
            self, send_after=due_in(delay), outbox=outbox, idempotency_key=idempotency_key
        )

    def send_at(
        self, when: datetime, *, outbox: Outbox | None = None, idempotency_key: str | None = None
    ) -> str:
        """Queue the email to be sent at ``when`` (naive means local time; past means now).

        ``idempotency_key``: see :meth:`enqueue`."""
        return postroom.client.submit(
            self, send_after=due_at(when), outbox=outbox, idempotency_key=idempotency_key
        )

    async def aenqueue(
        self, *, outbox: Outbox | None = None, idempotency_key: str | None = None
    ) -> str:
        """:meth:`enqueue` for coroutines: never blocks the event loop, not even when the
        buffer is full (then it waits in a worker thread)."""
        from postroom.client.aio import asubmit

        return await asubmit(self, outbox=outbox, idempotency_key=idempotency_key)

    async def asend_later(
        self,
        delay: str | timedelta,
        *,
        outbox: Outbox | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """:meth:`send_later` for coroutines (see :meth:`aenqueue`)."""
        from postroom.client.aio import asubmit

        when = due_in(delay)
        return await asubmit(self, send_after=when, outbox=outbox, idempotency_key=idempotency_key)

    async def asend_at(
        self, when: datetime, *, outbox: Outbox | None = None, idempotency_key: str | None = None
    ) -> str:
        """:meth:`send_at` for coroutines (see :meth:`aenqueue`)."""
        from postroom.client.aio import asubmit

        due = due_at(when)
        return await asubmit(self, send_after=due, outbox=outbox, idempotency_key=idempotency_key)

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> object:
            if name == "send":
                raise _NoSendError(_NO_SEND)
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


def _json_list(values: list[str]) -> str:
    if len(values) == 1:
        return f"[{_json_str(values[0])}]"
    return f"[{','.join(map(_json_str, values))}]"
