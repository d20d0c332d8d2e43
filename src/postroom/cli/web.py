"""``postroom web``: the dashboard, JSON API, ``/metrics`` and health checks."""

from __future__ import annotations

import argparse
import logging
from types import ModuleType

from postroom.cli.common import Subparsers, add_config_option, load_config
from postroom.errors import PostroomError

__all__ = ["MISSING_EXTRA", "register", "web_module"]

MISSING_EXTRA = "the dashboard needs the web extra: pip install 'postroom[web]'"


class WebUnavailableError(PostroomError):
    """Raised when the web extra is not installed."""


def register(sub: Subparsers) -> None:
    """Add the ``web`` command."""
    parser = sub.add_parser(
        "web",
        help="run the dashboard (pages, JSON API, /metrics, /healthz, /readyz)",
        description="Serve the dashboard over the database the dispatchers write. Off "
        "loopback addresses email.web.token is required and every request must carry it.",
    )
    add_config_option(parser)
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=None,
        help="address to listen on (default: email.web.listen, 127.0.0.1:8025)",
    )
    parser.set_defaults(handler=run)


def web_module() -> ModuleType:
    """``postroom.web``, or :class:`WebUnavailableError` naming the extra to install."""
    try:
        import postroom.web
    except ImportError as exc:
        raise WebUnavailableError(f"{MISSING_EXTRA} ({exc})") from None
    return postroom.web


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C."""
    config = load_config(args)
    web = web_module()
    web.listen_address(config, args.listen)  # refuse a bad address before anything starts
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    code: int = web.run_web(config, args.listen)
    return code
