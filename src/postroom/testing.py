"""Capture what code under test queues, without a queue, a database or a server.

Inside :func:`capture`, ``Email.enqueue()``, ``send_later()``, ``send_at()`` and their
``a``-prefixed coroutine forms (also the Django backend's sends) validate the email exactly as
they would for real, then record a copy of it instead of queueing it::

    from postroom.testing import capture

    with capture() as outbox:
        signup("ana@example.org")
    sent = outbox.assert_sent(to="ana@example.org", subject="Welcome")
    assert "activate" in sent.text

With the pytest plugin (installed with postroom) the ``postroom_outbox`` fixture gives such a
capture for one test. Emails queued with ``outbox=`` an explicit :class:`~postroom.Outbox` are
captured too; ``Outbox.submit()`` called directly is not. As on a real server, an idempotency
key is captured once: the first email queued with it is kept.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import postroom.client
from postroom.client.outbox import Submittable, _utc
from postroom.message import Attachment, Email
from postroom.payload import keyed_message_id, new_message_id

if TYPE_CHECKING:
    from postroom.client import Outbox

__all__ = ["Capture", "CapturedEmail", "active_capture", "capture"]


@dataclass(frozen=True, slots=True)
class CapturedEmail:
    """One captured email: a copy taken when it was queued, with how it was queued."""

    id: str
    email: Email
    send_after: datetime | None  # None: now
    idempotency_key: str | None

    @property
    def from_(self) -> str | None:
        return self.email.from_

    @property
    def to(self) -> list[str]:
        return self.email.to

    @property
    def cc(self) -> list[str]:
        return self.email.cc

    @property
    def bcc(self) -> list[str]:
        return self.email.bcc

    @property
    def recipients(self) -> list[str]:
        """Every envelope recipient (to, cc, bcc) as a bare address."""
        return self.email.envelope_recipients

    @property
    def subject(self) -> str:
        return self.email.subject

    @property
    def text(self) -> str | None:
        return self.email.text

    @property
    def html(self) -> str | None:
        return self.email.html

    @property
    def headers(self) -> dict[str, str]:
        return self.email.headers

    @property
    def attachments(self) -> list[Attachment]:
        return self.email.attachments

    def attachment(self, filename: str) -> Attachment:
        """The attachment named ``filename``; AssertionError naming those there are."""
        for attachment in self.email.attachments:
            if attachment.filename == filename:
                return attachment
        names = [a.filename for a in self.email.attachments]
        raise AssertionError(f"no attachment {filename!r} in {self!r}; attachments: {names}")

    def to_bytes(self) -> bytes:
        """The message as it would be sent."""
        return self.email.to_bytes()

    def __repr__(self) -> str:
        return f"<CapturedEmail {self.id} to={self.recipients} subject={self.subject!r}>"


class Capture:
    """The emails queued while a :func:`capture` is active, in the order they were queued.

    A sequence (``len(outbox)``, ``outbox[0]``, iteration) with helpers to find emails and to
    assert on them; every failed assertion lists what was captured.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._emails: list[CapturedEmail] = []
        self._keys: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._emails)

    def __iter__(self) -> Iterator[CapturedEmail]:
        return iter(list(self._emails))

    def __getitem__(self, index: int) -> CapturedEmail:
        return self._emails[index]

    def __repr__(self) -> str:
        return f"<Capture of {len(self._emails)} emails: {self._emails!r}>"

    def clear(self) -> None:
        """Forget every captured email (and idempotency key)."""
        with self._lock:
            self._emails.clear()
            self._keys.clear()

    def record(
        self,
        email: Submittable,
        *,
        send_after: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Validate ``email`` like ``enqueue()`` and keep a copy; return its message id."""
        message_id = (
            new_message_id() if idempotency_key is None else keyed_message_id(idempotency_key)
        )
        email.validate()
        email.ensure_identity()
        when = None if send_after is None else max(_utc(send_after), datetime.now(UTC))
        copy = Email.from_dict(_as_dict(email))
        with self._lock:
            if idempotency_key is not None and idempotency_key in self._keys:
                return message_id  # the first email with this key is the one kept
            if idempotency_key is not None:
                self._keys[idempotency_key] = message_id
            self._emails.append(CapturedEmail(message_id, copy, when, idempotency_key))
        return message_id

    # -- finding and asserting ------------------------------------------------------------------

    def find(
        self,
        *,
        to: str | None = None,
        subject: str | re.Pattern[str] | None = None,
        text: str | None = None,
        html: str | None = None,
        attachment: str | None = None,
    ) -> list[CapturedEmail]:
        """The captured emails that match every given criterion.

        ``to`` is any envelope recipient (to, cc or bcc; case ignored); ``subject`` is the
        exact subject or a compiled pattern searched in it; ``text`` and ``html`` are substrings
        of the bodies; ``attachment`` is a file name.
        """
        return [
            captured
            for captured in self
            if _matches(captured, to=to, subject=subject, text=text, html=html, file=attachment)
        ]

    def assert_sent(
        self,
        *,
        to: str | None = None,
        subject: str | re.Pattern[str] | None = None,
        text: str | None = None,
        html: str | None = None,
        attachment: str | None = None,
    ) -> CapturedEmail:
        """Assert that exactly one captured email matches (see :meth:`find`); return it."""
        found = self.find(to=to, subject=subject, text=text, html=html, attachment=attachment)
        if len(found) != 1:
            raise AssertionError(
                f"expected one email matching {_criteria(to, subject, text, html, attachment)}, "
                f"found {len(found)}; captured: {self._emails!r}"
            )
        return found[0]

    def assert_count(self, count: int) -> None:
        """Assert that ``count`` emails were captured."""
        if len(self._emails) != count:
            raise AssertionError(
                f"expected {count} emails, captured {len(self._emails)}: {self._emails!r}"
            )

    def assert_nothing_sent(self) -> None:
        """Assert that no email was captured."""
        self.assert_count(0)

    @property
    def recipients(self) -> list[str]:
        """Every envelope recipient of every captured email, in order."""
        return [address for captured in self for address in captured.recipients]

    @property
    def subjects(self) -> list[str]:
        return [captured.subject for captured in self]


def _as_dict(email: Submittable) -> dict[str, object]:
    if isinstance(email, Email):
        return email.to_dict()
    import json

    loaded: dict[str, object] = json.loads(email.to_json())
    return loaded


def _matches(
    captured: CapturedEmail,
    *,
    to: str | None,
    subject: str | re.Pattern[str] | None,
    text: str | None,
    html: str | None,
    file: str | None,
) -> bool:
    if to is not None and to.lower() not in {r.lower() for r in captured.recipients}:
        return False
    if isinstance(subject, re.Pattern):
        if subject.search(captured.subject) is None:
            return False
    elif subject is not None and subject != captured.subject:
        return False
    if text is not None and text not in (captured.text or ""):
        return False
    if html is not None and html not in (captured.html or ""):
        return False
    return file is None or any(a.filename == file for a in captured.attachments)


def _criteria(*values: object) -> str:
    names = ("to", "subject", "text", "html", "attachment")
    given = [f"{name}={value!r}" for name, value in zip(names, values, strict=True) if value]
    return ", ".join(given) or "anything"


# -- installing a capture ---------------------------------------------------------------------

_stack: list[Capture] = []
_stack_lock = threading.Lock()
_real_submit = postroom.client.submit


def active_capture() -> Capture | None:
    """The innermost active capture, or None outside :func:`capture`."""
    return _stack[-1] if _stack else None


def _captured_submit(
    email: Submittable,
    *,
    send_after: datetime | None = None,
    outbox: Outbox | None = None,
    idempotency_key: str | None = None,
    timeout_s: float | None = None,
) -> str:
    target = active_capture()
    if target is None:  # the capture ended in another thread meanwhile
        return _real_submit(
            email,
            send_after=send_after,
            outbox=outbox,
            idempotency_key=idempotency_key,
            timeout_s=timeout_s,
        )
    return target.record(email, send_after=send_after, idempotency_key=idempotency_key)


@contextmanager
def capture() -> Iterator[Capture]:
    """Capture every email queued in this process (all threads) until the block ends.

    Captures nest: the innermost one receives the emails.
    """
    captured = Capture()
    with _stack_lock:
        _stack.append(captured)
        postroom.client.submit = _captured_submit
    try:
        yield captured
    finally:
        with _stack_lock:
            _stack.remove(captured)
            if not _stack:
                postroom.client.submit = _real_submit
