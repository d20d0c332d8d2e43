"""The queries behind :meth:`Store.stats` (read-only, one connection, no locks taken)."""

from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select, true

from postroom.store.records import STATUSES, Stats
from postroom.store.schema import attempts, messages, status_finished, status_is

__all__ = ["PERCENTILES", "collect"]

m = messages
#: the latency percentiles reported, as fractions
PERCENTILES: tuple[float, float, float] = (0.50, 0.95, 0.99)
TOP_FAILURES = 10


def collect(
    conn: Connection, latency: ColumnElement[float], since: datetime | None, now: datetime
) -> Stats:
    """Gather every figure of :class:`~postroom.store.records.Stats`; see its docstring."""
    created = m.c.created_at >= since if since is not None else true()
    p50, p95, p99 = _latencies(conn, latency, since)
    due, scheduled = _queued_split(conn, now)
    return Stats(
        since=since,
        counts=_counts(conn, since),
        latency_p50_s=p50,
        latency_p95_s=p95,
        latency_p99_s=p99,
        top_failures=_top_failures(conn, created),
        attempts=_attempt_count(conn, since),
        queued_due=due,
        queued_scheduled=scheduled,
    )


def _counts(conn: Connection, since: datetime | None) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    if since is not None:
        by_status = select(m.c.status, func.count()).where(m.c.created_at >= since)
    else:  # each count reads one partial index, never the table itself
        for status in ("queued", "sending"):
            counts[status] = int(
                conn.execute(select(func.count()).where(status_is(status))).scalar_one()
            )
        by_status = select(m.c.status, func.count()).where(status_finished())
    for status, count in conn.execute(by_status.group_by(m.c.status)):
        counts[str(status)] = int(count)
    return counts


def _latencies(
    conn: Connection, latency: ColumnElement[float], since: datetime | None
) -> tuple[float | None, float | None, float | None]:
    sent = and_(status_is("sent"), m.c.sent_at.is_not(None))
    if since is not None:
        sent = and_(sent, m.c.sent_at >= since)
    total = int(conn.execute(select(func.count()).where(sent)).scalar_one())
    if total == 0:
        return None, None, None
    ranks = [max(1, math.ceil(p * total)) for p in PERCENTILES]
    ranked = (
        select(latency.label("latency_s"), func.row_number().over(order_by=latency).label("rank"))
        .where(sent)
        .subquery()
    )
    rows = conn.execute(
        select(ranked.c.rank, ranked.c.latency_s).where(ranked.c.rank.in_(sorted(set(ranks))))
    )
    by_rank = {int(rank): float(value) for rank, value in rows}
    p50, p95, p99 = (by_rank.get(rank) for rank in ranks)
    return p50, p95, p99


def _top_failures(conn: Connection, created: ColumnElement[bool]) -> list[tuple[str, int]]:
    failing = or_(
        status_is("failed", "expired"),
        and_(status_is("queued"), m.c.num_fails > 0),
    )
    count = func.count().label("n")
    query = (
        select(m.c.failure, count)
        .where(created, failing, m.c.failure.is_not(None))
        .group_by(m.c.failure)
        .order_by(count.desc(), m.c.failure)
        .limit(TOP_FAILURES)
    )
    return [(str(failure), int(n)) for failure, n in conn.execute(query)]


def _attempt_count(conn: Connection, since: datetime | None) -> int:
    query = select(func.count()).select_from(attempts)
    if since is not None:
        query = query.where(attempts.c.started_at >= since)
    return int(conn.execute(query).scalar_one())


def _queued_split(conn: Connection, now: datetime) -> tuple[int, int]:
    query = select(
        func.count().filter(m.c.due_at <= now), func.count().filter(m.c.due_at > now)
    ).where(status_is("queued"))
    due, scheduled = conn.execute(query).one()
    return int(due or 0), int(scheduled or 0)
