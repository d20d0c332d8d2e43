"""``postroom check-config``: validate a configuration and print it, secrets hidden."""

from __future__ import annotations

import argparse

from postroom.cli.common import Subparsers, add_config_option, load_config

__all__ = ["register"]


def register(sub: Subparsers) -> None:
    """Add the ``check-config`` command."""
    parser = sub.add_parser(
        "check-config",
        help="validate the configuration and print it",
        description="Validate the configuration and print the effective values (file, "
        "environment overrides and defaults combined) as YAML, secrets hidden. Exit code 0 "
        "when valid, 2 with the offending key when not.",
    )
    add_config_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print ``# source`` and the rendered configuration; a ConfigError propagates (exit 2)."""
    from postroom.config import render_config

    config = load_config(args)
    print(f"# source: {config.source}")
    print(render_config(config).rstrip("\n"))
    return 0
