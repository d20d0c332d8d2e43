"""The postroom database: schema, migrations, ingest, lease-based claims, outcomes, stats.

::

    store = open_store("sqlite:///.postroom/postroom.db")
    store.migrate()
    rows = store.claim_due("host-1:4711", limit=50, lease_s=300, now=datetime.now(UTC))
    store.finish("host-1:4711", [Finish(id=rows[0].id, status="sent", ...)])

See :mod:`postroom.store.store` for the life of a row and :mod:`postroom.store.schema` for the
tables users can query with SQL.
"""

from __future__ import annotations

from postroom.store.migrations import SCHEMA_VERSION
from postroom.store.records import (
    FINAL_STATUSES,
    FINISH_STATUSES,
    OUTCOMES,
    STATUSES,
    Abandoned,
    AttemptInfo,
    AttemptRecord,
    Claimed,
    DispatcherBeat,
    DispatcherInfo,
    Finish,
    MessageInfo,
    NewMessage,
    RecipientReply,
    Stats,
    Status,
)
from postroom.store.store import Store, open_store

__all__ = [
    "FINAL_STATUSES",
    "FINISH_STATUSES",
    "OUTCOMES",
    "SCHEMA_VERSION",
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
    "Store",
    "open_store",
]
