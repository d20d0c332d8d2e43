"""Ingest: move queued payloads into the ``messages`` table.

One round::

    take a batch from the queue ──▶ turn each payload into a row ──▶ INSERT (idempotent on id)
                                                                      and COMMIT
                   ack the whole batch ◀──────────────────────────────────┘
                   (only after the commit)

One item never stops ingest. Whatever goes wrong while turning one payload into a row (it is not
JSON, it is nested too deep, a time in it cannot be represented, its email cannot be sent) makes
that item a ``failed`` row with the reason and its raw bytes, stored under its own id when that
can be read, else under ``poison-<hash of the bytes>``. If the database refuses a whole batch,
its rows are inserted one by one, and a row the database refuses is stored instead as a
``failed`` row holding only its id, the reason and the raw bytes. Then every item taken is
acknowledged. If the database or the queue is down, nothing is acknowledged: the batch is
retried, and were this process to die, the queue would deliver it again after its redelivery
timeout. Redelivered payloads whose id is already stored are not inserted twice.

:meth:`Ingestor.run` repeats rounds until it is stopped. States of the loop::

    working ──a round raised──▶ backing off: wait 0.1 s, doubling up to 5 s; the outage is
       ▲                           │          logged once, when it starts
       └──── a round completed ────┘          (and once when it ends)

    backing off ──GIVE_UP_AFTER_ROUNDS rounds in a row raised an error that is neither the
                  database's (StoreError) nor the queue's (QueueError)──▶ failed
    any state ──the loop itself raised──▶ failed: run() raises IngestFailed
    any state ──stop set──▶ stopped: run() returns

A database or queue outage is waited out however long it lasts; any other error that keeps
coming back is a fault of this process, which then stops rather than run on without ingest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TypeGuard

from postroom.dispatch.parsed import ParsedEmails
from postroom.errors import IngestFailed, PayloadError, PostroomError, QueueError, StoreError
from postroom.message import Email
from postroom.payload import ID_PATTERN, QueuedEmail, decode, is_message_id
from postroom.queue.base import QueueEngine, Taken
from postroom.store import NewMessage, Store

__all__ = ["GIVE_UP_AFTER_ROUNDS", "Ingestor", "to_new_message"]

log = logging.getLogger("postroom.ingest")

#: rounds in a row that may fail with an error that is neither the database's nor the queue's
GIVE_UP_AFTER_ROUNDS = 5
_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 5.0
_TAKE_TIMEOUT_S = 1.0
_MAX_REASON_LENGTH = 1000


def _usable_id(value: object) -> TypeGuard[str]:
    """An id of the documented alphabet and length (:data:`postroom.payload.ID_PATTERN`)."""
    return is_message_id(value)


def _poison_id(raw: bytes) -> str:
    """The payload's own id when it can be read (so ``postroom status ID`` finds the failure
    under the id ``enqueue()`` returned), else a stable hash of the bytes, so that redelivery
    stays idempotent either way."""
    try:
        doc = json.loads(raw)
    except Exception:  # not UTF-8, not JSON, nested too deep: the hash names it
        doc = None
    found = doc.get("id") if isinstance(doc, dict) else None
    if _usable_id(found):
        return found
    return "poison-" + hashlib.sha256(raw).hexdigest()[:24]


def _storable(text: str) -> str:
    """``text`` as every database stores it: no NUL, no lone surrogate (written escaped)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _reason(exc: BaseException) -> str:
    """What went wrong, in one storable line of at most 1000 characters."""
    text = str(exc)
    if not isinstance(exc, PostroomError) or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    text = _storable(text)
    return text if len(text) <= _MAX_REASON_LENGTH else text[: _MAX_REASON_LENGTH - 3] + "..."


def _failed_row(
    row_id: str, raw: bytes, reason: str, now: datetime, *, why: str = "cannot be sent"
) -> NewMessage:
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
        failure=f"{why}: {reason}",
    )


def _subject_of(queued: QueuedEmail) -> str:
    subject = queued.email.get("subject")
    return _storable(subject) if isinstance(subject, str) else ""


def _expiry(send_after: datetime, max_time: timedelta) -> datetime:
    try:
        return send_after + max_time
    except OverflowError:
        raise PayloadError(
            f"send time {send_after.isoformat()} plus email.server.max-time ({max_time}) "
            "is past the year 9999"
        ) from None


def to_new_message(raw: bytes, *, max_time: timedelta, now: datetime) -> NewMessage:
    """Turn one payload into a row: ``queued`` when it can be sent, else ``failed`` with the
    reason. Never raises: whatever one payload makes go wrong makes it a ``failed`` row."""
    return _parse(raw, max_time, now)[0]


def _parse(raw: bytes, max_time: timedelta, now: datetime) -> tuple[NewMessage, Email | None]:
    """:func:`to_new_message`, and the Email built on the way when the row is ``queued``."""
    try:
        return _parse_payload(raw, max_time, now)
    except Exception as exc:  # one item must never stop ingest (RecursionError, MemoryError...)
        return _failed_row(_poison_id(raw), raw, _reason(exc), now), None


def _parse_payload(
    raw: bytes, max_time: timedelta, now: datetime
) -> tuple[NewMessage, Email | None]:
    try:
        queued = decode(raw)
    except PayloadError as exc:
        return _failed_row(_poison_id(raw), raw, str(exc), now), None
    except Exception as exc:  # a time that cannot be represented in UTC, JSON nested too deep
        reason = f"payload cannot be decoded: {_reason(exc)}"
        return _failed_row(_poison_id(raw), raw, reason, now), None
    if not _usable_id(queued.id):
        reason = f"payload field 'id' does not match {ID_PATTERN}"
        return _failed_row(_poison_id(raw), raw, reason, now), None
    try:
        email = Email.from_dict(queued.email)
        email.validate()
        recipients = list(email.envelope_recipients)
        mail_from = email.envelope_sender
        send_after = max(queued.send_after, queued.queued_at)
        expires_at = _expiry(send_after, max_time)
    except Exception as exc:
        row = _failed_row(queued.id, raw, _reason(exc), now)
        return replace(row, created_at=queued.queued_at, subject=_subject_of(queued)), None
    row = NewMessage(
        id=queued.id,
        status="queued",
        priority=int(email.priority or 0),
        created_at=queued.queued_at,
        send_after=send_after,
        expires_at=expires_at,
        mail_from=mail_from,
        recipients=recipients,
        subject=_subject_of(queued),
        message_id=email.message_id,
        data=raw,
    )
    return row, email


class _Backoff:
    """The waits of a failing loop, and when to give up; see the module docstring."""

    def __init__(self, give_up_after: int) -> None:
        self.give_up_after = give_up_after
        self.delay_s = 0.0
        self.unexpected = 0  # rounds in a row that failed with neither a store nor a queue error

    def failed(self, exc: Exception) -> float:
        """Count a failed round; return how long to wait, or raise :class:`IngestFailed`."""
        if isinstance(exc, StoreError | QueueError):
            if self.delay_s == 0.0:
                log.error("ingest failed, retrying until it works: %s", exc)
        else:
            self.unexpected += 1
            if self.unexpected >= self.give_up_after:
                raise IngestFailed(
                    f"ingest cannot go on: {self.unexpected} rounds in a row failed, "
                    f"the last with {_reason(exc)}"
                ) from exc
            if self.delay_s == 0.0:
                log.error("ingest failed unexpectedly, retrying", exc_info=exc)
        self.delay_s = min(max(self.delay_s * 2, _FIRST_BACKOFF_S), _MAX_BACKOFF_S)
        return self.delay_s

    def ok(self) -> None:
        if self.delay_s:
            log.info("ingest works again")
        self.delay_s, self.unexpected = 0.0, 0


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
        give_up_after: int = GIVE_UP_AFTER_ROUNDS,
    ) -> None:
        self.queue = queue
        self.parsed = parsed
        self.store = store
        self.max_time = max_time
        self.batch = batch
        self.clock = clock
        self.on_inserted = on_inserted
        self.give_up_after = give_up_after

    def run(self, stop: threading.Event) -> None:
        """Ingest round after round until ``stop`` is set, surviving every failure of a round
        with backoff; raise :class:`~postroom.errors.IngestFailed` when ingest cannot go on.
        """
        try:
            self._loop(stop)
        except IngestFailed:
            raise
        except Exception as exc:
            raise IngestFailed(f"ingest cannot go on: its loop failed: {_reason(exc)}") from exc

    def _loop(self, stop: threading.Event) -> None:
        backoff = _Backoff(self.give_up_after)
        while not stop.is_set():
            try:
                self.run_once(timeout_s=_TAKE_TIMEOUT_S)
            except Exception as exc:
                stop.wait(backoff.failed(exc))
            else:
                backoff.ok()

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
        inserted, refused = self._insert(_unique([row for row, _ in parsed]), now)
        if self.parsed is not None:
            for row, email in parsed:
                if email is not None and row.id not in refused:
                    self.parsed.put(row.data, email)
        return inserted

    def _insert(self, rows: list[NewMessage], now: datetime) -> tuple[int, set[str]]:
        """Insert ``rows``; when the batch is refused, row by row. Return the rows inserted and
        the ids of the rows the database refused (stored as failed instead)."""
        if len(rows) > 1:
            try:
                return self.store.insert_messages(rows, now), set()
            except Exception as exc:  # a row it refuses, or the database is down: see below
                log.debug("batch of %d refused, inserting row by row: %s", len(rows), exc)
        inserted, refused = 0, set()
        for row in rows:
            try:
                inserted += self.store.insert_messages([row], now)
            except Exception as exc:
                inserted += self._insert_refused(row, exc, now)
                refused.add(row.id)
        return inserted, refused

    def _insert_refused(self, row: NewMessage, exc: Exception, now: datetime) -> int:
        """Store a row the database refused as a bare ``failed`` row. Raises the database's
        error when that fails too: then the database itself is down, and nothing is acked."""
        failed = _failed_row(
            _poison_id(row.data), row.data, _reason(exc), now, why="cannot be stored"
        )
        inserted = self.store.insert_messages([failed], now)
        log.warning("message %s is stored as failed: %s", failed.id, failed.failure)
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
