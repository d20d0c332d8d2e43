"""The transport interface: hand one rendered message to an SMTP server and report what happened.

A transport never raises for an SMTP outcome: every reply, refusal, dropped connection and
timeout comes back as a :class:`DeliveryResult`, and the dispatcher decides what to do with it.

How the outcome is decided (RFC 5321, see the architecture file):

* ``SENT``: the server answered 2yz after the final dot, for at least one recipient.
  Recipients refused at RCPT time are listed in ``refused`` with their own replies; the
  dispatcher retries the 4yz ones and gives up on the 5yz ones.
* ``TEMPORARY``: a 4yz reply to MAIL/DATA/final dot, every recipient refused with at least one 4yz,
  a dropped connection or a timeout before the final dot. Try again later.
* ``PERMANENT``: a 5yz reply to MAIL/DATA/final dot, or every recipient refused with 5yz.
* ``MAYBE_DELIVERED``: the connection dropped or timed out after the final dot was sent and
  before the reply: the server may have the message. Retried with the same Message-ID.
"""

from __future__ import annotations

import enum
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from postroom.errors import MessageError

__all__ = [
    "DeliveryResult",
    "Job",
    "Outcome",
    "RelayState",
    "Reply",
    "Transport",
]

Job = tuple[str, Sequence[str], bytes]
"""One message to deliver: sender, recipients, and the message (or the queued payload)."""

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply. ``code`` is 0 when there was none (connection dropped, timeout)."""

    code: int
    text: str
    enhanced: str | None = None

    @classmethod
    def parse(cls, code: int, text: str | bytes) -> Reply:
        """Build a reply, taking the RFC 3463 enhanced status code off the front of the text."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        text = " ".join(text.split())
        match = _ENHANCED.match(text)
        if match:
            return cls(code=code, text=text[match.end() :].strip(), enhanced=match.group(0))
        return cls(code=code, text=text)

    @property
    def is_success(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_temporary(self) -> bool:
        """4yz, or no reply at all: worth retrying."""
        return self.code == 0 or 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        parts = [str(self.code) if self.code else "no reply"]
        if self.enhanced:
            parts.append(self.enhanced)
        if self.text:
            parts.append(self.text)
        return " ".join(parts)


class Outcome(enum.StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    MAYBE_DELIVERED = "maybe_delivered"
    #: the relay could not be used (connect, TLS, greeting, login); nothing of the message was
    #: sent, and the attempt is not the message's to pay for
    DEFERRED = "deferred"


@dataclass(frozen=True, slots=True)
class RelayState:
    """Whether the relay can be used: ``up``, else ``down_since`` (aware UTC), ``reason`` and
    ``retry_at`` (the next probe)."""

    up: bool = True
    down_since: datetime | None = None
    reason: str | None = None
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one delivery attempt achieved.

    ``reply`` is the reply that decided the outcome (the final-dot reply when sent).
    ``accepted`` lists the recipients the server took responsibility for; ``refused`` maps each
    recipient refused at RCPT time to its reply. Recipients in neither were not reached.
    """

    outcome: Outcome
    reply: Reply
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, Reply] = field(default_factory=dict)
    duration_s: float = 0.0


class Transport(ABC):
    """Delivers rendered messages. Implementations are safe to call from many threads."""

    @abstractmethod
    def deliver(self, mail_from: str, recipients: Sequence[str], message: bytes) -> DeliveryResult:
        """Send ``message`` (RFC 5322 bytes, CRLF) from ``mail_from`` to ``recipients``."""

    @property
    def concurrency(self) -> int:
        """How many deliveries :meth:`deliver_batch` keeps in flight at once."""
        return 1

    @property
    def relay(self) -> RelayState:
        """The state of the relay; this default is always up."""
        return RelayState()

    def deliver_batch(
        self,
        jobs: Iterable[Job],
        on_result: Callable[[int, DeliveryResult], None] | None = None,
    ) -> list[DeliveryResult]:
        """Deliver rendered messages; results in the order of ``jobs``.

        ``jobs`` is read lazily: a caller stops a batch by ending the iterable, and gets the
        results of the jobs read. A job that cannot be sent at all (an address that cannot go
        into an SMTP command, no recipient) is a ``PERMANENT`` result naming the problem, and
        the others still go. This default sends one after the other; a transport with several
        connections overlaps them.
        """
        results: list[DeliveryResult] = []
        for mail_from, recipients, message in jobs:
            try:
                result = self.deliver(mail_from, recipients, message)
            except (MessageError, ValueError, TypeError) as exc:
                result = unsendable(exc)
            if on_result is not None:
                on_result(len(results), result)
            results.append(result)
        return results

    def close(self) -> None:  # noqa: B027 - optional
        """Close every pooled connection."""


def unsendable(exc: Exception) -> DeliveryResult:
    return DeliveryResult(Outcome.PERMANENT, Reply(0, f"cannot be sent: {exc}"))
