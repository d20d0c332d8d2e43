"""Emails parsed at ingest, kept for their delivery so that the payload is not parsed twice.

Ingest has to build the :class:`~postroom.message.Email` of every payload to check it and to
find its envelope; delivery needs the same Email again to render it. This process usually
delivers what it ingested a moment ago, so ingest leaves the Email here, keyed by the payload's
bytes, and delivery takes it back. Rendering a payload and rendering its kept Email give the
same message: both come from the same dict.

Life of one entry::

    (none) ──ingest: put──▶ kept ──delivery: take──▶ (gone; later attempts parse the payload)
                             │
                             └── older than the byte budget allows ──▶ evicted

A row that another process claims, or that waits for a retry, is simply never taken here and
ages out. Nothing depends on an entry being present: a miss parses the payload as before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from postroom.message import Email
from postroom.transport.base import render_payload

__all__ = ["ParsedEmails"]

DEFAULT_BUDGET_BYTES = 32 * 1024 * 1024


class ParsedEmails:
    """A thread-safe, size-bounded map from payload bytes to the Email parsed from them.

    Each entry counts twice the payload's length against ``budget_bytes`` (the key and an Email
    of about the same size); the oldest entries go first.
    """

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, Email] = OrderedDict()
        self._used = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def put(self, payload: bytes, email: Email) -> None:
        """Keep ``email`` for ``payload``, evicting the oldest entries beyond the budget."""
        cost = 2 * len(payload)
        if cost > self.budget_bytes:
            return
        with self._lock:
            if payload in self._entries:
                return
            self._entries[payload] = email
            self._used += cost
            while self._used > self.budget_bytes:
                evicted, _ = self._entries.popitem(last=False)
                self._used -= 2 * len(evicted)

    def take(self, payload: bytes) -> Email | None:
        """The Email kept for ``payload``, removed from here; ``None`` when there is none."""
        with self._lock:
            email = self._entries.pop(payload, None)
            if email is not None:
                self._used -= 2 * len(payload)
        return email

    def render(self, payload: bytes) -> bytes:
        """The message of ``payload``: from its kept Email when there is one, else parsed."""
        email = self.take(payload)
        return email.to_bytes() if email is not None else render_payload(payload)
