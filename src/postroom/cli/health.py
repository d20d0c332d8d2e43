"""``postroom health``: for an orchestrator's probe, is the database up and are dispatchers alive?

Exit 0 when the database answers with the current schema and at least ``--dispatchers``
dispatchers have a recent heartbeat (within 5 of ``email.server.heartbeat``); exit 1 otherwise,
saying why. A dispatcher writes its heartbeat from its own thread and stops when its ingest
fails, so a fresh heartbeat means that process ingests and dispatches.
"""

from __future__ import annotations

import argparse

from postroom.cli.common import Subparsers, add_config_option, add_json_option, load_config, now
from postroom.cli.output import JsonValue, fmt_time, json_time, print_json
from postroom.errors import StoreError

__all__ = ["DEAD_AFTER_HEARTBEATS", "register"]

#: a dispatcher silent for this many heartbeats is dead
DEAD_AFTER_HEARTBEATS = 5


def register(sub: Subparsers) -> None:
    """Add the ``health`` command."""
    parser = sub.add_parser(
        "health",
        help="exit 0 if the database answers and enough dispatchers are alive",
        description="Check that the database answers with the current schema and that at "
        "least N dispatchers have a recent heartbeat (for liveness and readiness probes).",
    )
    add_config_option(parser)
    parser.add_argument(
        "--dispatchers",
        type=int,
        default=1,
        metavar="N",
        help="how many live dispatchers are required (default 1; 0 checks the database only)",
    )
    add_json_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from postroom.store import open_store
    from postroom.store.browse import Browser

    config = load_config(args)
    dead_after_s = DEAD_AFTER_HEARTBEATS * config.email.server.heartbeat.total_seconds()
    store = open_store(config.email.server.database.sqlalchemy_url(), pool_size=1)
    try:
        browser = Browser(store)
        problem = browser.schema_problem()
        if problem is not None:
            raise StoreError(problem)
        found = browser.dispatchers()
    finally:
        store.close()
    current = now()
    alive = [d for d in found if (current - d.heartbeat_at).total_seconds() <= dead_after_s]
    healthy = len(alive) >= args.dispatchers
    if args.json:
        rows: list[JsonValue] = [
            {
                "id": d.id,
                "host": d.host,
                "heartbeat_at": json_time(d.heartbeat_at),
                "alive": d in alive,
                "relay_down_since": json_time(d.relay_down_since),
            }
            for d in found
        ]
        print_json({"healthy": healthy, "dispatchers_alive": len(alive), "dispatchers": rows})
    else:
        for d in found:
            state = "alive" if d in alive else "silent"
            print(f"{d.id}  {state}, last heartbeat {fmt_time(d.heartbeat_at)}")
        print(f"{len(alive)} dispatcher(s) alive, {args.dispatchers} required")
    if not healthy:
        raise StoreError(f"only {len(alive)} dispatcher(s) alive, {args.dispatchers} required")
    return 0
