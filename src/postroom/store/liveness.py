"""Dispatchers keep their leases alive; the rows of a dead one are taken over as an attempt.

Life of one dispatcher in the ``dispatchers`` table::

    (none) ──register──▶ alive ──heartbeat (every few seconds)──▶ alive
                           │
                           ├── unregister (clean stop) ──────────────────▶ (none)
                           ├── no heartbeat for ``dead_after`` ──────────▶ dead
                           └── its process is gone (same host, checked) ──▶ (none)

A heartbeat also renews the lease of every row the dispatcher holds, so a lease lives exactly
as long as its holder: a batch can take as long as the relay needs. A row is *abandoned* when
it is ``sending`` and its lease ran out, or its owner has no row in ``dispatchers``, or the
owner's heartbeat is older than ``dead_after``. :func:`take_over` leases abandoned rows to the
caller, which records the takeover as an attempt (``abandoned``, or ``maybe_delivered`` when
``attempt_started_at`` says the delivery had begun) and decides the row's next state.

Heartbeats compare the clocks of the hosts that write them: keep them in sync (NTP), within a
small part of ``dead_after``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, insert, or_, select, update

from postroom.store.records import Abandoned, DispatcherBeat, DispatcherInfo
from postroom.store.schema import dispatchers, messages, status_is

__all__ = [
    "all_dispatchers",
    "beat",
    "remove_dispatchers",
    "take_over",
]

m = messages
d = dispatchers


def beat(conn: Connection, me: DispatcherBeat, now: datetime, lease_until: datetime) -> set[str]:
    """Write ``me``'s heartbeat (registering it when it has no row) and renew the lease of every
    row it holds until ``lease_until``; return the ids of the rows it holds."""
    relay = {"relay_down_since": me.relay_down_since, "relay_failure": me.relay_failure}
    found = conn.execute(update(d).where(d.c.id == me.id).values(heartbeat_at=now, **relay))
    if not found.rowcount:
        conn.execute(
            insert(d).values(
                id=me.id,
                host=me.host,
                pid=me.pid,
                started_at=me.started_at,
                heartbeat_at=now,
                **relay,
            )
        )
    held = update(m).where(status_is("sending"), m.c.lease_owner == me.id)
    renewed = conn.execute(held.values(lease_until=lease_until).returning(m.c.id))
    return set(renewed.scalars())


def remove_dispatchers(conn: Connection, ids: Sequence[str]) -> int:
    """Forget the dispatchers ``ids``: the rows they hold become abandoned at once."""
    if not ids:
        return 0
    return int(conn.execute(delete(d).where(d.c.id.in_(list(ids)))).rowcount)


def all_dispatchers(conn: Connection) -> list[DispatcherInfo]:
    """Every registered dispatcher, the most recent heartbeat first."""
    rows = conn.execute(select(d).order_by(d.c.heartbeat_at.desc(), d.c.id))
    return [DispatcherInfo(**row._asdict()) for row in rows]


def take_over(
    conn: Connection,
    owner: str,
    now: datetime,
    *,
    dead_after: timedelta,
    lease_until: datetime,
    limit: int,
    own_leftovers: bool = False,
) -> list[Abandoned]:
    """Lease up to ``limit`` abandoned rows to ``owner`` until ``lease_until``; return them.

    ``owner``'s own rows count as abandoned only with ``own_leftovers``: a dispatcher starting
    under a configured id takes over what its previous run left (it holds nothing yet).
    Runs in the caller's write transaction; on PostgreSQL the rows are locked with
    ``FOR UPDATE SKIP LOCKED``, so two dispatchers never take over the same row, and each update
    is fenced on the previous owner.
    """
    live = select(d.c.id).where(d.c.heartbeat_at >= now - dead_after)
    dead = or_(m.c.lease_until < now, m.c.lease_owner.not_in(live))
    whose = m.c.lease_owner == owner if own_leftovers else m.c.lease_owner != owner
    found = conn.execute(
        select(
            *(m.c[name] for name in _ABANDONED_COLUMNS),
        )
        .where(status_is("sending"), whose if own_leftovers else and_(whose, dead))
        .order_by(m.c.priority.desc(), m.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=m)
    ).all()
    taken = []
    for row in found:
        fenced = (
            update(m)
            .where(m.c.id == row.id, status_is("sending"), m.c.lease_owner == row.lease_owner)
            .values(lease_owner=owner, lease_until=lease_until, updated_at=now)
        )
        if conn.execute(fenced).rowcount:
            taken.append(_abandoned(row))
    return taken


_ABANDONED_COLUMNS = (
    *("id", "data", "mail_from", "recipients", "pending_recipients", "num_fails"),
    *("created_at", "send_after", "expires_at", "message_id", "lease_owner"),
    *("attempt_started_at", "refused"),
)


def _abandoned(row: Row[Any]) -> Abandoned:
    r = row._mapping
    pending = r["pending_recipients"]
    return Abandoned(
        id=r["id"],
        data=bytes(r["data"]),
        mail_from=r["mail_from"],
        recipients=list(pending if pending is not None else r["recipients"]),
        num_fails=int(r["num_fails"]),
        created_at=r["created_at"],
        send_after=r["send_after"],
        expires_at=r["expires_at"],
        message_id=r["message_id"],
        refused=list(r["refused"] or []),
        previous_owner=r["lease_owner"] or "",
        attempt_started_at=r["attempt_started_at"],
    )
