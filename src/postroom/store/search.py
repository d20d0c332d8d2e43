"""Message search for the dashboard: exact keys through indexes, other filters through a
bounded window of the newest messages, paged by position.

* exact lookups (message id, Message-ID) use the primary key and ``ix_messages_message_id``;
* any other filter (status, sender, recipient, subject words, time range) is applied to a
  *window* of at most :data:`WINDOW_ROWS` messages, newest first, ranged over
  ``ix_messages_created``. A search that did not fill its page in one window says where it
  stopped (:attr:`SearchPage.older`), and the next request goes on from there.

A page position is ``(created_at, id)`` of the last row shown: the next page lists what is older.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Select, Text, and_, or_, select, type_coerce
from sqlalchemy.sql.elements import ColumnElement as Column

from postroom.store.records import STATUSES
from postroom.store.schema import messages, status_is

__all__ = ["WINDOW_ROWS", "MessageSummary", "SearchPage", "SearchQuery", "search"]

m = messages
#: how many messages one search request looks through when a filter needs more than an index
WINDOW_ROWS = 20_000

_SUMMARY_COLUMNS = (
    m.c.id,
    m.c.status,
    m.c.created_at,
    m.c.updated_at,
    m.c.sent_at,
    m.c.due_at,
    m.c.mail_from,
    m.c.recipients,
    m.c.subject,
    m.c.message_id,
    m.c.num_fails,
    m.c.failure,
)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What to look for; every field given must match (``None`` / empty: any).

    ``key`` is a message id or a Message-ID (with or without ``<>``), matched exactly.
    ``sender``, ``recipient`` match part of the address, case-insensitively; ``subject`` holds
    words that must all occur in the subject. ``since`` / ``until`` bound ``created_at``
    (``until`` excluded). ``older_than`` is a page position: only messages older than this
    ``(created_at, id)`` are listed.
    """

    key: str = ""
    sender: str = ""
    recipient: str = ""
    subject: str = ""
    status: str = ""
    since: datetime | None = None
    until: datetime | None = None
    older_than: tuple[datetime, str] | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        if self.status and self.status not in STATUSES:
            raise ValueError(f"{self.status!r} is not a status ({', '.join(STATUSES)})")
        if not 1 <= self.limit <= 1000:
            raise ValueError(f"limit must be 1-1000, got {self.limit}")

    @property
    def windowed(self) -> bool:
        """Whether the filters need a scan window (anything beyond the exact key)."""
        return bool(self.sender or self.recipient or self.subject or self.status)


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """One row of a search result (no payload, no attempts)."""

    id: str
    status: str
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    due_at: datetime
    mail_from: str
    recipients: list[str]
    subject: str
    message_id: str | None
    num_fails: int
    failure: str | None


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of results, newest first.

    ``next`` is the position to ask for the next page with (``None``: no more rows). ``older``
    is set when the page ended because the search window did (fewer matches than asked for may
    still have older ones): searching on from it looks further back.
    """

    rows: list[MessageSummary]
    next: tuple[datetime, str] | None
    older: tuple[datetime, str] | None = None
    scanned_back_to: datetime | None = None


def search(conn: Connection, query: SearchQuery) -> SearchPage:
    """One page of messages matching ``query``, newest first (see the module docstring)."""
    if query.key:
        return _by_key(conn, query)
    if not query.windowed:
        return _page(conn, _filtered(query), query.limit)
    floor = _window_floor(conn, query)
    page = _page(conn, _filtered(query, floor), query.limit)
    if page.next is not None or floor is None:
        return page
    return SearchPage(page.rows, None, older=floor, scanned_back_to=floor[0])


def _filtered(
    query: SearchQuery, floor: tuple[datetime, str] | None = None
) -> Select[tuple[object, ...]]:
    conditions: list[ColumnElement[bool]] = []
    if query.status:
        conditions.append(status_is(query.status))
    if query.sender:
        conditions.append(_contains(m.c.mail_from, query.sender))
    if query.recipient:
        conditions.append(_contains(m.c.recipients, query.recipient))
    conditions.extend(_contains(m.c.subject, word) for word in query.subject.split())
    if query.since is not None:
        conditions.append(m.c.created_at >= query.since)
    if query.until is not None:
        conditions.append(m.c.created_at < query.until)
    if query.older_than is not None:
        conditions.append(_older_than(query.older_than))
    if floor is not None:
        conditions.append(_not_older_than(floor))
    return select(*_SUMMARY_COLUMNS).where(*conditions)


def _contains(column: Column[object], text: str) -> ColumnElement[bool]:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    as_text = type_coerce(column, Text())  # the JSON list of recipients is searched as text
    return as_text.ilike(f"%{escaped}%", escape="\\")


def _older_than(position: tuple[datetime, str]) -> ColumnElement[bool]:
    created_at, row_id = position
    return and_(m.c.created_at <= created_at, or_(m.c.created_at < created_at, m.c.id < row_id))


def _not_older_than(position: tuple[datetime, str]) -> ColumnElement[bool]:
    created_at, row_id = position
    return and_(m.c.created_at >= created_at, or_(m.c.created_at > created_at, m.c.id >= row_id))


def _window_floor(conn: Connection, query: SearchQuery) -> tuple[datetime, str] | None:
    """The oldest ``(created_at, id)`` of the next :data:`WINDOW_ROWS` messages in the time range
    (``None``: the range holds no more than that, so the window reaches its start)."""
    bounds = SearchQuery(since=query.since, until=query.until, older_than=query.older_than)
    newest_first = (
        _filtered(bounds)
        .with_only_columns(m.c.created_at, m.c.id)
        .order_by(m.c.created_at.desc(), m.c.id.desc())
    )
    row = conn.execute(newest_first.offset(WINDOW_ROWS - 1).limit(1)).one_or_none()
    if row is None:
        return None
    return row[0], str(row[1])


def _page(conn: Connection, query: Select[tuple[object, ...]], limit: int) -> SearchPage:
    ordered = query.order_by(m.c.created_at.desc(), m.c.id.desc()).limit(limit + 1)
    rows = [MessageSummary(**row._asdict()) for row in conn.execute(ordered)]
    if len(rows) <= limit:
        return SearchPage(rows, None)
    shown = rows[:limit]
    return SearchPage(shown, (shown[-1].created_at, shown[-1].id))


def _by_key(conn: Connection, query: SearchQuery) -> SearchPage:
    key = query.key.strip()
    bare = key.strip("<>")
    match = or_(m.c.id == key, m.c.message_id == f"<{bare}>", m.c.message_id == bare)
    unfiltered = SearchQuery(
        status=query.status, since=query.since, until=query.until, limit=query.limit
    )
    found = _filtered(unfiltered).where(match)
    return _page(conn, found, query.limit)
