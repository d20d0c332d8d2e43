"""``postroom cancel``, ``retry`` and ``purge``: change what is in the database.

States these commands move a message between::

    queued (incl. scheduled) ──cancel──▶ cancelled
    failed | expired ──retry──▶ queued (fails reset, due now, expires now + email.server.max-time)
    sent | failed | expired | cancelled, last updated before the cut-off ──purge──▶ deleted
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

from postroom.cli.common import (
    Subparsers,
    add_config_option,
    add_json_option,
    duration_arg,
    load_config,
    message_must_exist,
    now,
    opened_store,
)
from postroom.cli.output import fmt_time, json_time, print_json

__all__ = ["register"]

#: purge reports progress on stderr once it has run this long, then at most this often
PROGRESS_EVERY_S = 1.0


def register(sub: Subparsers) -> None:
    """Add the ``cancel``, ``retry`` and ``purge`` commands."""
    cancel = sub.add_parser(
        "cancel",
        help="cancel a queued or scheduled message",
        description="Cancel a message that is queued or scheduled and not being sent right now.",
    )
    add_config_option(cancel)
    cancel.add_argument("id", metavar="ID")
    cancel.set_defaults(handler=run_cancel)

    retry = sub.add_parser(
        "retry",
        help="queue a failed or expired message again",
        description="Queue a failed or expired message again: its fail count "
        "is reset, it is due now and expires after email.server.max-time.",
    )
    add_config_option(retry)
    retry.add_argument("id", metavar="ID")
    retry.set_defaults(handler=run_retry)

    purge = sub.add_parser(
        "purge",
        help="delete finished messages older than a duration",
        description="Delete sent, failed, expired and cancelled messages (and "
        "their attempts) last updated longer ago than --older-than. Progress "
        "goes to stderr on long runs; the total to stdout.",
    )
    add_config_option(purge)
    default_age = os.environ.get("POSTROOM_PURGE_OLDER_THAN") or None
    purge.add_argument(
        "--older-than",
        type=duration_arg,
        metavar="DURATION",
        default=duration_arg(default_age) if default_age else None,
        required=default_age is None,
        help="e.g. 30d or 720h (env POSTROOM_PURGE_OLDER_THAN)",
    )
    add_json_option(purge)
    purge.set_defaults(handler=run_purge)


def run_cancel(args: argparse.Namespace) -> int:
    """Cancel one message; StoreError (wrong state) and NotFoundError propagate (exit 1)."""
    config = load_config(args)
    with opened_store(config) as store, message_must_exist(args.id):
        store.cancel(args.id, now())
    print(f"cancelled {args.id}")
    return 0


def run_retry(args: argparse.Namespace) -> int:
    """Queue one failed or expired message again."""
    config = load_config(args)
    current = now()
    expires_at = current + config.email.server.max_time
    with opened_store(config) as store, message_must_exist(args.id):
        store.retry(args.id, current, expires_at)
    print(f"queued {args.id} again (expires {fmt_time(expires_at)})")
    return 0


def run_purge(args: argparse.Namespace) -> int:
    """Delete old finished messages in batches and print how many went."""
    config = load_config(args)
    cutoff = now() - args.older_than
    with opened_store(config) as store:
        deleted = store.purge(cutoff, progress=_progress_printer())
    if args.json:
        print_json({"deleted": deleted, "older_than": json_time(cutoff)})
    else:
        print(f"purged {deleted} messages last updated before {fmt_time(cutoff)}")
    return 0


def _progress_printer() -> Callable[[int], None]:
    """A callback that prints ``deleted so far`` to stderr, only on runs longer than a second."""
    last_shown = time.monotonic()

    def show(deleted_so_far: int) -> None:
        nonlocal last_shown
        current = time.monotonic()
        if current - last_shown < PROGRESS_EVERY_S:
            return
        last_shown = current
        print(f"purge: {deleted_so_far} deleted so far", file=sys.stderr, flush=True)

    return show
