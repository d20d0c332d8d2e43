"""The values that go in and out of :class:`~postroom.store.Store`: frozen, typed, no SQL.

Every datetime here is timezone-aware UTC. ``recipients`` fields are lists of bare addresses.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from postroom._quick_init import quick_init

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "FINISH_STATUSES",
    "OUTCOMES",
    "STATUSES",
    "Abandoned",
    "AttemptInfo",
    "AttemptRecord",
    "Claimed",
    "DispatcherBeat",
    "DispatcherInfo",
    "Finish",
    "MessageInfo",
    "NewMessage",
    "RecipientReply",
    "Stats",
    "Status",
]


class Status(enum.StrEnum):
    """Every value of ``messages.status``, in lifecycle order."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


#: every value of ``messages.status``, in lifecycle order
STATUSES: tuple[str, ...] = tuple(Status)
#: statuses of messages still on their way (every other status is final)
ACTIVE_STATUSES: tuple[str, ...] = ("queued", "sending")
#: statuses a message never leaves on its own (``retry`` can queue failed/expired ones again)
FINAL_STATUSES: tuple[str, ...] = ("sent", "failed", "expired", "cancelled")
#: statuses a dispatcher may write with :meth:`Store.finish`
FINISH_STATUSES: tuple[str, ...] = ("sent", "queued", "failed", "expired")
#: ``attempts.outcome`` values
OUTCOMES: tuple[str, ...] = ("sent", "temporary", "permanent", "maybe_delivered", "abandoned")


@quick_init
@dataclass(frozen=True, slots=True)
class NewMessage:
    """One row for :meth:`Store.insert_messages`.

    ``status`` is ``queued`` (to be sent from ``send_after`` until ``expires_at``) or ``failed``
    (stored only to record why it cannot be sent; ``failure`` says why).
    """

    id: str
    status: str
    priority: int
    created_at: datetime
    send_after: datetime
    expires_at: datetime
    mail_from: str
    recipients: list[str]
    subject: str
    message_id: str | None
    data: bytes
    failure: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Claimed:
    """A row handed to one dispatcher under a lease by :meth:`Store.claim_due`.

    ``recipients`` are the ones still to deliver (``pending_recipients``, else all of them);
    ``refused`` the permanent refusals of earlier attempts (``"address: reply"``).
    """

    id: str
    data: bytes
    mail_from: str
    recipients: list[str]
    num_fails: int
    created_at: datetime
    send_after: datetime
    expires_at: datetime
    message_id: str | None
    refused: list[str] = field(default_factory=list)


@quick_init
@dataclass(frozen=True, slots=True)
class Abandoned(Claimed):
    """A row taken over by :meth:`Store.take_over` from a dispatcher that died holding it.

    ``previous_owner`` held its lease; ``attempt_started_at`` is when that dispatcher began
    delivering it (``None``: it had not begun, as far as the database knows).
    """

    previous_owner: str = ""
    attempt_started_at: datetime | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class RecipientReply:
    """One recipient's reply in one attempt (``code`` ``None``: the recipient got none)."""

    recipient: str
    code: int | None
    enhanced_code: str | None
    text: str


@dataclass(frozen=True, slots=True)
class DispatcherBeat:
    """What a live dispatcher writes with each heartbeat (``dispatchers`` table).

    ``relay_down_since`` / ``relay_failure``: its SMTP relay is unusable since then, and why
    (``None``: the relay works).
    """

    id: str
    host: str
    pid: int
    started_at: datetime
    relay_down_since: datetime | None = None
    relay_failure: str | None = None


@dataclass(frozen=True, slots=True)
class DispatcherInfo:
    """One ``dispatchers`` row: a dispatcher and its last heartbeat."""

    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    relay_down_since: datetime | None
    relay_failure: str | None


@quick_init
@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What one delivery attempt did; becomes one ``attempts`` row.

    ``outcome`` is one of :data:`OUTCOMES`: ``abandoned`` when a dispatcher died holding the
    message before it went on the wire, ``maybe_delivered`` also when it died after.
    ``replies`` holds every recipient's reply.
    """

    started_at: datetime
    ended_at: datetime
    outcome: str
    code: int | None
    enhanced_code: str | None
    reply: str
    dispatcher: str
    recipients: list[str]
    replies: Sequence[RecipientReply] = ()


@quick_init
@dataclass(frozen=True, slots=True)
class Finish:
    """The outcome of one claimed message, written by :meth:`Store.finish`.

    ``status``: ``sent``, ``queued`` (try again at ``next_attempt_at``), ``failed`` or
    ``expired``. ``count_fail`` adds one to ``num_fails`` and sets ``last_failed_at`` to the
    attempt's end. ``pending_recipients`` are the ones still to deliver (``None`` = all).
    ``refused``: every permanent refusal so far (``None``: unchanged).
    """

    id: str
    status: str
    attempt: AttemptRecord | None
    count_fail: bool
    failure: str | None
    next_attempt_at: datetime | None
    pending_recipients: list[str] | None
    sent_at: datetime | None
    refused: list[str] | None = None


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One ``messages`` row without its payload (``data_size`` is the payload's length in bytes).

    ``due_at`` is when a queued row is next due: the later of ``send_after`` and
    ``next_attempt_at``.
    """

    id: str
    status: str
    priority: int
    created_at: datetime
    send_after: datetime
    next_attempt_at: datetime | None
    due_at: datetime
    expires_at: datetime
    num_fails: int
    last_failed_at: datetime | None
    failure: str | None
    sent_at: datetime | None
    updated_at: datetime
    mail_from: str
    recipients: list[str]
    pending_recipients: list[str] | None
    subject: str
    message_id: str | None
    data_size: int
    lease_owner: str | None
    lease_until: datetime | None
    attempt_started_at: datetime | None = None
    refused: list[str] | None = None


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One ``attempts`` row, oldest first in :meth:`Store.attempts`."""

    id: int
    message_id: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    code: int | None
    enhanced_code: str | None
    reply: str
    dispatcher: str
    recipients: list[str]
    replies: list[RecipientReply] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Stats:
    """Figures for ``postroom stats``.

    ``counts``: messages created since ``since`` (all when ``None``) by current status, every
    status present. Latency percentiles (nearest rank, seconds from ``created_at`` to
    ``sent_at``) cover messages sent since ``since``; ``None`` when none were sent.
    ``top_failures``: up to 10 ``(failure, count)`` pairs, most frequent first, among failed,
    expired and queued-after-a-failure messages created since ``since``. ``attempts``: attempt
    rows started since ``since``. ``queued_due`` / ``queued_scheduled``: queued messages (of any
    age) that are due at ``now`` (the backlog) / not due yet. ``dispatchers``: every
    registered dispatcher with its heartbeat and the state of its relay.
    """

    since: datetime | None
    counts: dict[str, int]
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    top_failures: list[tuple[str, int]] = field(default_factory=list)
    attempts: int = 0
    queued_due: int = 0
    queued_scheduled: int = 0
    dispatchers: list[DispatcherInfo] = field(default_factory=list)
