"""Emails parsed at ingest, kept for their delivery so that the payload is not parsed twice.

Ingest has to build the :class:`~postroom.message.Email` of every payload to check it and to
find its envelope; delivery needs the same Email again to render it. This process usually
delivers what it ingested a moment ago, so ingest leaves the Email here, keyed by the payload's
bytes, and delivery takes it back. Rendering a payload and rendering its kept Email give the
same message: both come from the same dict.

Life of one entry::

    (none) ──ingest: put──▶ kept ──delivery: take──▶ (gone; later attempts parse the payload)
       │                     │
       │                     └── older than ``max_age_s`` when room is needed ──▶ evicted
       └── put while the budget is spent on younger entries ──▶ not kept

When the budget is spent, the entries kept are the oldest young ones: the dispatcher claims the
oldest messages first, so with a backlog those are the ones it needs next. A row that another
process claims, or that waits for a retry, is never taken here and goes once it is
``max_age_s`` old. Nothing depends on an entry being present: a miss parses the payload.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from postroom.message import Email
from postroom.payload import decode_email

__all__ = ["ParsedEmails", "render_payload"]


def render_payload(payload: bytes) -> bytes:
    """The RFC 5322 bytes of a queued payload: the same Message-ID and Date on every attempt."""
    return Email.from_dict(decode_email(payload)).to_bytes()


DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_AGE_S = 60.0
#: what one entry costs per byte of its payload: the key, and an Email measured at about three
#: times its payload's length for small messages (less for attachments)
_COST_PER_BYTE = 4


class ParsedEmails:
    """A thread-safe, size-bounded map from payload bytes to the Email parsed from them.

    Each entry counts four times its payload's length against ``budget_bytes``.
    """

    def __init__(
        self,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget_bytes, self.max_age_s, self._clock = budget_bytes, max_age_s, clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[Email, float]] = OrderedDict()
        self._used = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def put(self, payload: bytes, email: Email) -> None:
        """Keep ``email`` for ``payload`` if the budget allows, once stale entries are gone."""
        cost = _COST_PER_BYTE * len(payload)
        now = self._clock()
        with self._lock:
            if payload in self._entries:
                return
            if self._used + cost > self.budget_bytes:
                self._evict_older_than(now - self.max_age_s)
            if self._used + cost > self.budget_bytes:
                return
            self._entries[payload] = (email, now)
            self._used += cost

    def take(self, payload: bytes) -> Email | None:
        """The Email kept for ``payload``, removed from here; ``None`` when there is none."""
        with self._lock:
            entry = self._entries.pop(payload, None)
            if entry is None:
                return None
            self._used -= _COST_PER_BYTE * len(payload)
        return entry[0]

    def _evict_older_than(self, cutoff: float) -> None:
        while self._entries:
            payload, (_, kept_at) = next(iter(self._entries.items()))
            if kept_at > cutoff:
                return
            del self._entries[payload]
            self._used -= _COST_PER_BYTE * len(payload)

    def render(self, payload: bytes) -> bytes:
        """The message of ``payload``: from its kept Email when there is one, else parsed."""
        email = self.take(payload)
        return email.to_bytes() if email is not None else render_payload(payload)
