"""``postroom serve``: run the dispatcher until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse

from postroom.cli.common import Subparsers, add_config_option, env_flag, load_config

__all__ = ["register"]


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
        "one (env POSTROOM_DEV=1)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load the configuration and hand over to the dispatcher; its exit code is ours."""
    from postroom.dispatch import serve

    config = load_config(args)
    return serve(config, dev=args.dev)
