"""Pieces every command shares: the ``-c`` option, argument types, config and store access.

Heavy modules (the config loader, SQLAlchemy through the store) are imported inside the
functions that need them, so ``postroom --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from postroom.durations import DurationTooLongError, parse_duration
from postroom.errors import NotFoundError, StoreError

if TYPE_CHECKING:
    from postroom.config import Config
    from postroom.store import Store

__all__ = [
    "Handler",
    "Subparsers",
    "UsageError",
    "add_config_option",
    "add_json_option",
    "duration_arg",
    "env_flag",
    "header_arg",
    "load_config",
    "message_must_exist",
    "now",
    "opened_store",
    "readable_file",
    "since_arg",
    "when_arg",
]

#: what ``add_subparsers()`` returns; each command group's ``register`` takes one
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: what a command's function looks like: parsed arguments in, exit code out
Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Raised by a command for input the parser could not check (exit code 2)."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``-c/--config FILE``; when absent the loader reads ``$POSTROOM_CONFIG``, then the default."""
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=None,
        help="configuration file (default: $POSTROOM_CONFIG, else ./postroom.yaml, "
        "else the embedded default with everything under ./.postroom/)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: print one JSON document instead of text (also ``POSTROOM_JSON=1``)."""
    parser.add_argument(
        "--json",
        action="store_true",
        default=env_flag("POSTROOM_JSON"),
        help="print one JSON document with stable keys (env POSTROOM_JSON=1)",
    )


def env_flag(name: str) -> bool:
    """True when the environment variable is set to 1/true/yes/on (any case)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def duration_arg(text: str) -> timedelta:
    """argparse type: a Go-style duration such as ``5m`` or ``1h30m`` (``30d`` for days)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def when_arg(text: str) -> datetime:
    """argparse type: an ISO 8601 time; naive means local time. Returns aware UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (expected e.g. 2026-12-01T09:00 or "
            "2026-12-01T09:00:00+01:00)"
        ) from None
    return _in_utc(value, text)


def since_arg(text: str) -> datetime:
    """argparse type: how far back, as a duration (``24h``) or an ISO 8601 time. Returns UTC."""
    try:
        return now() - parse_duration(text)
    except DurationTooLongError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (e.g. 24h, 7d) nor an ISO 8601 time"
        ) from None
    return _in_utc(value, text)


def _in_utc(value: datetime, text: str) -> datetime:
    try:
        return value.astimezone(UTC)  # a naive value is taken as local time here
    except (OverflowError, OSError, ValueError):  # before year 1 or after 9999 in UTC
        raise argparse.ArgumentTypeError(
            f"{text!r} is outside the times UTC can represent"
        ) from None


def header_arg(text: str) -> tuple[str, str]:
    """argparse type: ``'Name: value'`` -> ``("Name", "value")``."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a header (expected 'Name: value')")
    return name.strip(), value.strip()


def readable_file(text: str) -> Path:
    """argparse type: a path to an existing regular file."""
    path = Path(text)
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return path


def now() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


def load_config(args: argparse.Namespace) -> Config:
    """Load the configuration named by ``-c`` (or ``$POSTROOM_CONFIG``, or the default)."""
    from postroom.config import load_config as _load

    path: str | None = args.config
    return _load(path)


@contextmanager
def opened_store(config: Config, *, read_only: bool = False) -> Iterator[Store]:
    """The configured database, closed afterwards. Commands that write migrate it first (so a
    fresh install works); ``read_only`` ones change nothing and need the current schema."""
    from postroom.store import SCHEMA_VERSION, open_store

    store = open_store(config.email.server.database.sqlalchemy_url())
    try:
        if not read_only:
            store.migrate()
        elif (version := store.schema_version()) < SCHEMA_VERSION:
            found = f"schema version {version}" if version else "no postroom tables"
            raise StoreError(
                f"database {store.url} has {found} (this postroom needs {SCHEMA_VERSION}): "
                "start `postroom serve` once to create or upgrade it"
            )
        yield store
    finally:
        store.close()


@contextmanager
def message_must_exist(message_id: str) -> Iterator[None]:
    """Reword the store's NotFoundError the way every command reports it."""
    try:
        yield
    except NotFoundError as exc:
        raise NotFoundError(f"no message with id {message_id}") from exc
