"""The ``postroom`` command line.

Exit codes: 0 done; 1 the operation failed (queue or database error, no such message, a
message in the wrong state); 2 bad input (usage, configuration, an email that cannot be built).
Errors are one line on stderr, ``postroom: <message>``, never a traceback.

Environment: ``POSTROOM_CONFIG`` names the configuration file (``-c`` wins over it), and
``POSTROOM_EMAIL__...`` variables override single keys (see :mod:`postroom.config`).
``POSTROOM_FROM`` is the default ``send --from``, ``POSTROOM_PURGE_OLDER_THAN`` the default
``purge --older-than``, ``POSTROOM_DEV=1`` means ``serve --dev`` and ``POSTROOM_JSON=1`` means
``--json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from postroom.cli import config_cmd, health, inspect, manage, send, serve, web
from postroom.cli.common import Subparsers, UsageError
from postroom.cli.output import printable
from postroom.errors import ConfigError, MessageError, PostroomError

__all__ = ["build_parser", "main"]

#: each command group adds its subcommands, in the order ``--help`` lists them
COMMAND_GROUPS: tuple[Callable[[Subparsers], None], ...] = (
    serve.register,
    send.register,
    inspect.register,
    manage.register,
    web.register,
    health.register,
    config_cmd.register,
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser; every subcommand sets ``handler`` to the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="postroom",
        description="Queued email: send, inspect and dispatch.",
        epilog="Environment: POSTROOM_CONFIG names the config file; POSTROOM_EMAIL__<KEY>__... "
        "overrides one key (e.g. POSTROOM_EMAIL__SERVER__MAX_FAILS=5).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for register in COMMAND_GROUPS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (UsageError, ConfigError, MessageError) as exc:
        return _fail(exc, 2)
    except PostroomError as exc:
        return _fail(exc, 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        return _reader_gone()
    return code


def _reader_gone() -> int:
    """The reader of our output went away (``postroom stats | head``): stop quietly. Whatever
    is still buffered for it goes nowhere instead of raising again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 1


def _fail(problem: object, code: int) -> int:
    print(f"postroom: {printable(str(problem))}", file=sys.stderr)
    return code


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("postroom")
    except PackageNotFoundError:
        return "unknown"
