"""The transport interface: hand rendered messages to a relay and report what happened.

A transport never raises for an SMTP outcome: every reply, refusal, dropped connection and
timeout comes back as a :class:`DeliveryResult`, and the caller decides what to do with it.

How the outcome is decided (RFC 5321, see the architecture file):

* ``SENT``: the server answered 2yz after the final dot, for at least one recipient.
  Recipients refused at RCPT time are listed in ``refused`` with their own replies; the
  caller retries the 4yz ones and gives up on the 5yz ones.
* ``TEMPORARY``: a 4yz reply to MAIL/DATA/final dot, every recipient refused with at least one
  4yz, a dropped connection, a timeout or a malformed reply before the final dot. Try again later.
* ``PERMANENT``: a 5yz reply to MAIL/DATA/final dot, every recipient refused with 5yz, or a
  message that cannot be sent at all (no recipient, an address that cannot go into a command,
  an extension the message needs and the server does not offer, a message over its size limit).
* ``MAYBE_DELIVERED``: the connection dropped, timed out or answered nonsense after the final
  dot was sent and before a proper reply: the server may have the message. Retry with the same
  Message-ID.
* ``DEFERRED``: the relay itself could not be used (connection refused, TLS failure, a 421
  greeting, a failed login) or is backing off after such a failure. Nothing of the message
  was sent; the caller must not count it as an attempt, and :attr:`Transport.relay` says when
  the relay will be tried again.
"""

from __future__ import annotations

import enum
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from postroom._quick_init import quick_init

__all__ = [
    "DeliveryResult",
    "Job",
    "OnResult",
    "Outcome",
    "RelayState",
    "Reply",
    "Transport",
    "envelope_problem",
    "unsendable",
]

Job = tuple[str, Sequence[str], bytes]
"""One message to deliver: envelope sender, envelope recipients, and the rendered message
(RFC 5322 bytes with CRLF line endings)."""

OnResult = Callable[[int, "DeliveryResult"], None]
"""``on_result(position, result)``: called once per job as soon as its result is known."""

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
_NOT_IN_COMMANDS = re.compile(r"[\r\n\0<>]")


@quick_init
@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply. ``code`` is 0 when there was none (connection dropped, timeout).

    ``enhanced`` is the RFC 3463 status code when the text starts with one whose class matches
    the reply's first digit (``550 5.1.1 ...``); one of another class stays part of the text.
    """

    code: int
    text: str
    enhanced: str | None = None

    @classmethod
    def parse(cls, code: int, text: str | bytes) -> Reply:
        """Build a reply, taking the enhanced status code off the front of the text."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        text = " ".join(text.split())
        match = _ENHANCED.match(text)
        if match and str(code).startswith(match.group(1)):
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
    DEFERRED = "deferred"


@quick_init
@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one delivery attempt achieved.

    ``reply`` is the reply that decided the outcome (the final-dot reply when sent).
    ``accepted`` lists the recipients the server took responsibility for; ``refused`` maps each
    recipient refused at RCPT time (or left over by a failed chunk) to its reply. ``replies``
    holds the RCPT reply of every recipient that got one, accepted or refused. Recipients in
    none of them were not reached.
    """

    outcome: Outcome
    reply: Reply
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, Reply] = field(default_factory=dict)
    duration_s: float = 0.0
    replies: Mapping[str, Reply] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RelayState:
    """Whether the relay can be used, as the transport last saw it.

    When down: since when (aware UTC), why (the reply or error of the last failure), and when
    the next probe may run. While down, deliveries come back ``DEFERRED``.
    """

    up: bool = True
    down_since: datetime | None = None
    reason: str | None = None
    retry_at: datetime | None = None


class Transport(ABC):
    """Delivers rendered messages. Implementations are safe to call from many threads."""

    @property
    def concurrency(self) -> int:
        """How many deliveries :meth:`deliver_batch` keeps in flight at once."""
        return 1

    @property
    def relay(self) -> RelayState:
        """The state of the relay; a transport without one is always up."""
        return RelayState()

    @abstractmethod
    def deliver_batch(
        self, jobs: Iterable[Job], on_result: OnResult | None = None
    ) -> list[DeliveryResult]:
        """Deliver rendered messages; return their results in the order of ``jobs``.

        ``jobs`` is read lazily, a job only when a connection can take it: a caller stops a
        batch by ending the iterable, and gets the results of the jobs read. ``on_result`` is
        called in the calling thread once per job, as soon as its result is known, with the
        job's 0-based position in reading order. A job that cannot be sent at all (an address
        that cannot go into an SMTP command, no recipient) is a ``PERMANENT`` result naming the
        problem, and the others still go. Never raises for an SMTP outcome.
        """

    def close(self) -> None:  # noqa: B027 - optional
        """Close every pooled connection; the transport stays usable."""


def unsendable(problem: str) -> DeliveryResult:
    """The ``PERMANENT`` result of a job that cannot be sent at all."""
    return DeliveryResult(Outcome.PERMANENT, Reply(0, f"cannot be sent: {problem}"))


def envelope_problem(mail_from: str, recipients: Sequence[str]) -> str | None:
    """Why an envelope cannot go into SMTP commands at all, or ``None`` when it can.

    Non-ASCII addresses are not refused here: whether they can go depends on the server
    (SMTPUTF8, RFC 6531).
    """
    if isinstance(recipients, str | bytes):
        return "recipients must be a sequence of addresses, not one string"
    if not recipients or not all(recipients):
        return "a message needs at least one recipient, and no empty ones"
    addresses = (mail_from, *recipients)
    try:
        joined = "".join(addresses)  # TypeError unless every address is a string
    except TypeError:
        return f"addresses must be strings, got {addresses!r}"
    if not _NOT_IN_COMMANDS.search(joined):
        return None
    bad = next(a for a in addresses if _NOT_IN_COMMANDS.search(a))
    return f"address {bad!r} cannot be used in an SMTP command"
