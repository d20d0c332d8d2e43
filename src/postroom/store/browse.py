"""Read-only queries behind the dashboard: message search, overview figures, metrics sources.

Every query here stays fast on tables of millions of rows by reading the indexes of
:mod:`postroom.store.schema` and nothing else:

* message search: see :mod:`postroom.store.search`;
* time series range over ``ix_messages_sent`` (sent) and ``ix_messages_finished`` (failed);
* counts by status read the partial indexes only; rows finished long ago are recounted once a
  minute, and per-hour figures of hours that are over are read once (:class:`_Settled`).

No function takes a lock or writes; each runs on one connection of the store's pool.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    func,
    literal_column,
    select,
)
from sqlalchemy.sql.elements import ColumnElement as Column

from postroom.store.liveness import all_dispatchers
from postroom.store.migrations import SCHEMA_VERSION, current_version
from postroom.store.records import ACTIVE_STATUSES, STATUSES, DispatcherInfo
from postroom.store.schema import attempts, messages, status_finished, status_is
from postroom.store.search import SearchPage, SearchQuery, search
from postroom.store.store import Store

__all__ = [
    "Backlog",
    "Browser",
    "LatencyPoint",
    "Overview",
    "SeriesPoint",
]

m = messages
_T = TypeVar("_T")
#: a time bucket or a finished row this old no longer changes (see :class:`_Settled`)
SETTLED_AFTER = timedelta(minutes=1)
#: the latency percentiles of the overview, as fractions
PERCENTILES: tuple[float, ...] = (0.50, 0.95, 0.99)
TOP_FAILURES = 10


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """Messages sent and failed (``failed`` or ``expired``) in the bucket starting at ``start``."""

    start: datetime
    sent: int
    failed: int


@dataclass(frozen=True, slots=True)
class LatencyPoint:
    """Enqueue-to-sent latency percentiles (seconds) of the messages sent in one bucket
    (``None`` when none was sent then)."""

    start: datetime
    count: int
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None


@dataclass(frozen=True, slots=True)
class Backlog:
    """Queued messages due now and scheduled later; the age of the oldest due one."""

    due: int
    scheduled: int
    oldest_due_age_s: float | None


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything the overview page shows, read at ``now``."""

    now: datetime
    counts: dict[str, int]
    backlog: Backlog
    per_minute: list[SeriesPoint]
    per_hour: list[SeriesPoint]
    latency: list[LatencyPoint]
    top_failures: list[tuple[str, int]]
    dispatchers: list[DispatcherInfo] = field(default_factory=list)


class Browser:
    """The dashboard's read-only view of one :class:`Store`."""

    def __init__(self, store: Store, *, recount_every_s: float = 60.0) -> None:
        self.store = store
        self.dialect = store.dialect
        #: how often the counts of long-finished messages are read again (see :meth:`counts`)
        self.recount_every_s = recount_every_s
        self._counted_at: float | None = None
        self._watermark: datetime | None = None
        self._settled: Counter[str] = Counter()
        self._kept: dict[str, _Settled[Any]] = {}

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        # the store's own connection handling: errors become StoreError naming the database
        with self.store._connect() as conn:
            yield conn

    # -- health ---------------------------------------------------------------------------------

    def schema_problem(self) -> str | None:
        """``None`` when the database answers with the current schema, else what is wrong."""
        with self._read() as conn:
            version = current_version(conn)
        if version >= SCHEMA_VERSION:
            return None
        found = f"schema version {version}" if version else "no postroom tables"
        return (
            f"database {self.store.url} has {found} (this postroom needs {SCHEMA_VERSION}): "
            "start `postroom serve` once to create or upgrade it"
        )

    def payload(self, message_id: str) -> bytes:
        """The stored payload of message ``message_id``; ``KeyError`` when there is none."""
        query = select(m.c.data).where(m.c.id == message_id)
        with self._read() as conn:
            data = conn.execute(query).scalar_one_or_none()
        if data is None:
            raise KeyError(message_id)
        return bytes(data)

    def dispatchers(self) -> list[DispatcherInfo]:
        """Every registered dispatcher, most recent heartbeat first."""
        with self._read() as conn:
            return all_dispatchers(conn)

    # -- search ---------------------------------------------------------------------------------

    def search(self, query: SearchQuery) -> SearchPage:
        """One page of messages matching ``query``, newest first (:mod:`postroom.store.search`)."""
        with self._read() as conn:
            return search(conn, query)

    # -- overview -------------------------------------------------------------------------------

    def overview(self, now: datetime, *, hours: int = 48) -> Overview:
        """The overview figures: per minute over the last hour, per hour over ``hours``."""
        with self._read() as conn:
            return Overview(
                now=now,
                counts=self.counts(conn, now),
                backlog=backlog(conn, now),
                per_minute=self._series(conn, now, timedelta(minutes=1), 60),
                per_hour=self._series(conn, now, timedelta(hours=1), hours),
                latency=self._latency(conn, now, timedelta(hours=1), 24),
                top_failures=top_failures(conn, now - timedelta(hours=24)),
                dispatchers=all_dispatchers(conn),
            )

    def counts(self, conn: Connection, now: datetime) -> dict[str, int]:
        """Messages by status. Rows finished before the last recount's watermark are counted
        again at most every :attr:`recount_every` (a purge or retry of old rows shows then);
        everything newer is counted at each call."""
        found = dict.fromkeys(STATUSES, 0)
        for status in ACTIVE_STATUSES:
            active = select(func.count()).where(status_is(status))
            found[status] = int(conn.execute(active).scalar_one())
        due = (
            self._counted_at is None or time.monotonic() - self._counted_at >= self.recount_every_s
        )
        if due or self._watermark is None or now < self._watermark:
            self._watermark = now - SETTLED_AFTER
            self._settled = _finished_counts(conn, m.c.updated_at < self._watermark)
            self._counted_at = time.monotonic()
        recent = _finished_counts(conn, m.c.updated_at >= self._watermark)
        for status, n in (self._settled + recent).items():
            found[status] = n
        return found

    def _series(
        self, conn: Connection, now: datetime, step: timedelta, buckets: int
    ) -> list[SeriesPoint]:
        def compute(first: datetime) -> dict[datetime, SeriesPoint]:
            sent = _bucket_counts(conn, self.dialect, m.c.sent_at, status_is("sent"), first, step)
            failed = _bucket_counts(conn, self.dialect, m.c.updated_at, _failed_rows(), first, step)
            return {s: SeriesPoint(s, sent.get(s, 0), failed.get(s, 0)) for s in sent | failed}

        kept = self._kept.setdefault(f"series-{step}", _Settled())
        starts = _starts(now, step, buckets)
        return kept.read(starts, step, now, compute, lambda s: SeriesPoint(s, 0, 0))

    def _latency(
        self, conn: Connection, now: datetime, step: timedelta, buckets: int
    ) -> list[LatencyPoint]:
        def compute(first: datetime) -> dict[datetime, LatencyPoint]:
            query = select(m.c.sent_at, self.store._dialect.latency_s()).where(
                status_is("sent"), m.c.sent_at >= first
            )
            by_bucket: dict[datetime, list[float]] = defaultdict(list)
            for sent_at, latency_s in conn.execute(query):
                by_bucket[_bucket_start(sent_at, step)].append(max(0.0, float(latency_s)))
            return {start: _percentiles(start, values) for start, values in by_bucket.items()}

        kept = self._kept.setdefault(f"latency-{step}", _Settled())
        starts = _starts(now, step, buckets)
        return kept.read(starts, step, now, compute, lambda s: LatencyPoint(s, 0, None, None, None))

    # -- metrics sources ------------------------------------------------------------------------

    def attempt_counts(self, after_id: int, up_to_id: int | None = None) -> dict[str, int]:
        """Attempts by outcome with ``after_id < id <= up_to_id`` (no upper bound: ``None``)."""
        a = attempts
        query = select(a.c.outcome, func.count()).where(a.c.id > after_id)
        if up_to_id is not None:
            query = query.where(a.c.id <= up_to_id)
        with self._read() as conn:
            rows = conn.execute(query.group_by(a.c.outcome))
            return {str(outcome): int(n) for outcome, n in rows}

    def attempts_after(self, after_id: int) -> list[tuple[int, str]]:
        """``(id, outcome)`` of every attempt with ``id > after_id``."""
        query = select(attempts.c.id, attempts.c.outcome).where(attempts.c.id > after_id)
        with self._read() as conn:
            return [(int(i), str(outcome)) for i, outcome in conn.execute(query)]

    def last_attempt_id(self) -> int:
        """The highest ``attempts.id`` (0 when there is none)."""
        with self._read() as conn:
            return int(conn.execute(select(func.max(attempts.c.id))).scalar_one() or 0)

    def sent_latencies(self, sent_since: datetime | None) -> list[tuple[str, datetime, float]]:
        """``(id, sent_at, latency_s)`` of sent messages with ``sent_at >= sent_since``."""
        query = select(m.c.id, m.c.sent_at, self.store._dialect.latency_s()).where(
            status_is("sent")
        )
        if sent_since is not None:
            query = query.where(m.c.sent_at >= sent_since)
        with self._read() as conn:
            return [(str(i), at, max(0.0, float(lat))) for i, at, lat in conn.execute(query)]

    def newest_sent_at(self) -> datetime | None:
        """The latest ``sent_at`` of a sent message (``None``: none was sent)."""
        query = select(func.max(m.c.sent_at)).where(status_is("sent"))
        with self._read() as conn:
            newest: datetime | None = conn.execute(query).scalar_one()
            return newest

    def latency_histogram(
        self, bounds_s: Sequence[float], sent_before: datetime
    ) -> tuple[list[int], float]:
        """Cumulative counts of sent messages (``sent_at < sent_before``) whose latency is at
        most each bound, then all of them; and the sum of their latencies, in seconds."""
        latency = self.store._dialect.latency_s()
        counts = [func.count().filter(latency <= bound) for bound in bounds_s]
        query = select(*counts, func.count(), func.coalesce(func.sum(latency), 0.0)).where(
            status_is("sent"), m.c.sent_at < sent_before
        )
        with self._read() as conn:
            *found, total_s = conn.execute(query).one()
        return [int(n or 0) for n in found], max(0.0, float(total_s))

    def gauges(self, now: datetime) -> tuple[dict[str, int], Backlog, list[DispatcherInfo]]:
        """Counts by status, the backlog and the dispatchers, on one connection."""
        with self._read() as conn:
            return self.counts(conn, now), backlog(conn, now), all_dispatchers(conn)


# -- queries ------------------------------------------------------------------------------------


def _finished_counts(conn: Connection, when: ColumnElement[bool]) -> Counter[str]:
    """Finished messages by status among those matching ``when`` (ranges ``updated_at`` over
    ``ix_messages_finished``, one seek per status)."""
    query = select(m.c.status, func.count()).where(status_finished(), when).group_by(m.c.status)
    return Counter({str(status): int(n) for status, n in conn.execute(query)})


class _Settled(Generic[_T]):
    """Figures of time buckets that ended more than :data:`SETTLED_AFTER` ago: they no longer
    change (results are written within a fraction of a second), so they are read once."""

    def __init__(self) -> None:
        self.values: dict[datetime, _T] = {}

    def read(
        self,
        starts: list[datetime],
        step: timedelta,
        now: datetime,
        compute: Callable[[datetime], dict[datetime, _T]],
        empty: Callable[[datetime], _T],
    ) -> list[_T]:
        missing = [start for start in starts if start not in self.values]
        fresh = compute(missing[0]) if missing else {}
        found = []
        for start in starts:
            value = self.values.get(start)
            if value is None:
                value = fresh.get(start) or empty(start)
                if start + step <= now - SETTLED_AFTER:
                    self.values[start] = value
            found.append(value)
        self.values = {s: v for s, v in self.values.items() if starts[0] <= s <= starts[-1]}
        return found


def _starts(now: datetime, step: timedelta, buckets: int) -> list[datetime]:
    first = _bucket_start(now, step) - step * (buckets - 1)
    return [first + step * i for i in range(buckets)]


def _percentiles(start: datetime, values: list[float]) -> LatencyPoint:
    ranked = sorted(values)
    p50, p95, p99 = (nearest_rank(ranked, p) for p in PERCENTILES)
    return LatencyPoint(start, len(ranked), p50, p95, p99)


def backlog(conn: Connection, now: datetime) -> Backlog:
    """Queued messages due at ``now`` and later, and how long the oldest due one has waited."""
    # two counts, each within one index (ix_messages_due, then any queued-only index): a count
    # of both at once would look up every queued row in the table
    due_now = select(func.count()).where(status_is("queued"), m.c.due_at <= now)
    due = conn.execute(due_now).scalar_one()
    queued = conn.execute(select(func.count()).where(status_is("queued"))).scalar_one()
    scheduled = int(queued) - int(due)
    oldest = conn.execute(
        select(m.c.due_at).where(status_is("queued")).order_by(m.c.due_at).limit(1)
    ).scalar_one_or_none()
    age = (now - oldest).total_seconds() if oldest is not None and oldest <= now else None
    return Backlog(int(due or 0), int(scheduled or 0), age)


def top_failures(conn: Connection, since: datetime) -> list[tuple[str, int]]:
    """The most frequent failure reasons of messages that failed or expired since ``since``,
    and of queued messages waiting after a failed attempt."""
    found: Counter[str] = Counter()
    # two queries, one per index (ix_messages_finished, ix_messages_due): an OR of the two
    # conditions would read the whole table
    for rows in (
        and_(_failed_rows(), m.c.updated_at >= since),
        and_(status_is("queued"), m.c.num_fails > 0),
    ):
        query = select(m.c.failure, func.count()).where(rows, m.c.failure.is_not(None))
        for failure, n in conn.execute(query.group_by(m.c.failure)):
            found[str(failure)] += int(n)
    ranked = sorted(found.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:TOP_FAILURES]


def nearest_rank(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (at least one)."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _failed_rows() -> ColumnElement[bool]:
    """``failed`` and ``expired`` rows, written to match ``ix_messages_finished``."""
    active: list[ColumnElement[str]] = [literal_column(f"'{s}'") for s in ACTIVE_STATUSES]
    return and_(m.c.status.not_in(active), status_is("failed", "expired"))


def _bucket_start(when: datetime, step: timedelta) -> datetime:
    if step >= timedelta(hours=1):
        return when.replace(minute=0, second=0, microsecond=0)
    return when.replace(second=0, microsecond=0)


def _bucket_counts(
    conn: Connection,
    dialect: str,
    column: Column[datetime],
    rows: ColumnElement[bool],
    first: datetime,
    step: timedelta,
) -> dict[datetime, int]:
    """Rows per time bucket, counted in the database (no row leaves it)."""
    hourly = step >= timedelta(hours=1)
    if dialect == "sqlite":  # fixed-width UTC text: the bucket is a prefix
        bucket: ColumnElement[object] = func.substr(column, 1, 13 if hourly else 16)
    else:
        bucket = func.date_trunc("hour" if hourly else "minute", column)
    query = select(bucket, func.count()).where(rows, column >= first).group_by(bucket)
    found: Counter[datetime] = Counter()
    for start, n in conn.execute(query):
        found[_bucket_key(start, first)] += int(n)
    return dict(found)


def _bucket_key(value: object, like: datetime) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(like.tzinfo)
    text = str(value)  # "YYYY-MM-DD HH" or "YYYY-MM-DD HH:MM"
    hour = datetime.strptime(text[:13], "%Y-%m-%d %H")
    minute = int(text[14:16]) if len(text) >= 16 else 0
    return hour.replace(minute=minute, tzinfo=like.tzinfo)
