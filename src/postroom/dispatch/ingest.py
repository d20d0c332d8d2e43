"""Ingest: move queued payloads into the ``messages`` table.

One round::

    take a batch from the queue ──▶ decode each payload ──▶ INSERT (idempotent on id), COMMIT
                                                                 │
                                          ack the whole batch ◀──┘   (only after the commit)

A payload that cannot be decoded, or whose email cannot be sent (no recipient, bad address), is
stored as ``failed`` with the reason and its raw bytes, and acknowledged: it never blocks the
queue or crashes the server. If the database is down, nothing is acknowledged: the batch is
retried, and were this process to die, the queue would deliver it again after its redelivery
timeout. Redelivered payloads whose id is already stored are not inserted twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from postroom.dispatch.parsed import ParsedEmails
from postroom.errors import MessageError, PayloadError
from postroom.message import Email
from postroom.payload import QueuedEmail, decode
from postroom.queue.base import QueueEngine, Taken
from postroom.store import NewMessage, Store

__all__ = ["Ingestor", "to_new_message"]

log = logging.getLogger("postroom.ingest")


_MAX_ID_LENGTH = 200


def _poison_id(raw: bytes) -> str:
    """The payload's own id when it can be read (so ``postroom status ID`` finds the failure
    under the id ``enqueue()`` returned), else a stable hash of the bytes, so that redelivery
    stays idempotent either way."""
    try:
        doc = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        doc = None
    found = doc.get("id") if isinstance(doc, dict) else None
    if isinstance(found, str) and 0 < len(found) <= _MAX_ID_LENGTH and found.isprintable():
        return found
    return "poison-" + hashlib.sha256(raw).hexdigest()[:24]


def _failed_row(row_id: str, raw: bytes, reason: str, now: datetime) -> NewMessage:
    return NewMessage(
        id=row_id,
        status="failed",
        priority=0,
        created_at=now,
        send_after=now,
        expires_at=now,
        mail_from="",
        recipients=[],
        subject="",
        message_id=None,
        data=raw,
        failure=f"cannot be sent: {reason}",
    )


def _subject_of(queued: QueuedEmail) -> str:
    subject = queued.email.get("subject")
    return subject if isinstance(subject, str) else ""


def to_new_message(raw: bytes, *, max_time: timedelta, now: datetime) -> NewMessage:
    """Turn one payload into a row: ``queued`` when it can be sent, ``failed`` with the reason."""
    return _parse(raw, max_time, now)[0]


def _parse(raw: bytes, max_time: timedelta, now: datetime) -> tuple[NewMessage, Email | None]:
    """:func:`to_new_message`, and the Email built on the way when the row is ``queued``."""
    try:
        queued = decode(raw)
    except PayloadError as exc:
        return _failed_row(_poison_id(raw), raw, str(exc), now), None
    try:
        email = Email.from_dict(queued.email)
        email.validate()
        recipients = list(email.envelope_recipients)
        mail_from = email.envelope_sender
    except (MessageError, ValueError, TypeError, KeyError) as exc:
        row = _failed_row(queued.id, raw, str(exc) or type(exc).__name__, now)
        return replace(row, created_at=queued.queued_at, subject=_subject_of(queued)), None
    send_after = max(queued.send_after, queued.queued_at)
    row = NewMessage(
        id=queued.id,
        status="queued",
        priority=int(email.priority or 0),
        created_at=queued.queued_at,
        send_after=send_after,
        expires_at=send_after + max_time,
        mail_from=mail_from,
        recipients=recipients,
        subject=_subject_of(queued),
        message_id=email.message_id,
        data=raw,
    )
    return row, email


class Ingestor:
    """Moves batches from a queue engine into the store; see the module docstring."""

    def __init__(
        self,
        queue: QueueEngine,
        store: Store,
        *,
        max_time: timedelta,
        batch: int = 200,
        clock: Callable[[], datetime],
        on_inserted: Callable[[int], None] = lambda n: None,
        parsed: ParsedEmails | None = None,
    ) -> None:
        self.queue = queue
        self.parsed = parsed
        self.store = store
        self.max_time = max_time
        self.batch = batch
        self.clock = clock
        self.on_inserted = on_inserted

    def run_once(self, timeout_s: float) -> int:
        """Take one batch (waiting up to ``timeout_s``), store it, ack it; return rows inserted.

        Raises :class:`~postroom.errors.StoreError` or :class:`~postroom.errors.QueueError`
        without acknowledging anything when the database or the queue fails.
        """
        taken = self.queue.take(self.batch, timeout_s)
        if not taken:
            return 0
        inserted = self.store_batch(taken)
        self.queue.ack([t.tag for t in taken])
        if inserted:
            self.on_inserted(inserted)
        return inserted

    def store_batch(self, taken: Sequence[Taken]) -> int:
        """Store the payloads of one batch; keep their Emails in ``parsed`` for delivery."""
        now = self.clock()
        parsed = [_parse(t.payload, self.max_time, now) for t in taken]
        for row, _ in parsed:
            if row.status == "failed":
                log.warning(
                    "message %s cannot be sent and is stored as failed: %s", row.id, row.failure
                )
        inserted = self.store.insert_messages(_unique([row for row, _ in parsed]))
        if self.parsed is not None:
            for row, email in parsed:
                if email is not None:
                    self.parsed.put(row.data, email)
        return inserted


def _unique(rows: Sequence[NewMessage]) -> list[NewMessage]:
    """Drop repeated ids inside one batch (a payload pushed twice): the first one wins."""
    seen: set[str] = set()
    out = []
    for row in rows:
        if row.id not in seen:
            seen.add(row.id)
            out.append(row)
    return out
