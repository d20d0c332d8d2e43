"""``postroom serve``: run the dispatcher until SIGTERM or Ctrl-C.

With ``--dev`` the dashboard runs beside it (in this process, on ``email.web.listen``) and
shows the capture mailbox too. Without the ``web`` extra, or when that address is taken, a
warning says so and the dispatcher runs alone.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from postroom.cli.common import Subparsers, add_config_option, env_flag, load_config
from postroom.cli.web import web_module
from postroom.errors import PostroomError

if TYPE_CHECKING:
    from postroom.config import Config

__all__ = ["register"]

log = logging.getLogger("postroom.serve")


def register(sub: Subparsers) -> None:
    """Add the ``serve`` command."""
    parser = sub.add_parser(
        "serve",
        help="run the dispatcher",
        description="Move queued email into the database and deliver it over SMTP, until "
        "SIGTERM or Ctrl-C (then in-flight messages are finished or released).",
    )
    add_config_option(parser)
    parser.add_argument(
        "--dev",
        action="store_true",
        default=env_flag("POSTROOM_DEV"),
        help="also run a local capture SMTP server and deliver to it instead of the configured "
        "one, and the dashboard with its mailbox on email.web.listen (env POSTROOM_DEV=1)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load the configuration and hand over to the dispatcher; its exit code is ours."""
    from postroom.dispatch import serve

    config = load_config(args)
    if not args.dev:
        return serve(config)
    with _dashboard(config):
        return serve(config, dev=True)


@contextmanager
def _dashboard(config: Config) -> Iterator[None]:
    """The dashboard with the dev mailbox, for as long as the block runs (if it can start)."""
    from postroom.dispatch.server import DEV_MAILBOX, setup_logging

    setup_logging()
    try:
        web = web_module()
    except PostroomError as exc:
        log.warning("%s; running without it", exc)
        yield
        return
    running = web.start_in_background(config, DEV_MAILBOX)
    try:
        yield
    finally:
        if running is not None:
            running.stop()
