"""The dispatch side: ingest from the queue, claim, deliver, record (``postroom serve``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postroom.config import Config

__all__ = ["serve"]


def serve(config: Config, *, dev: bool = False) -> int:
    """Run a dispatcher until SIGTERM or Ctrl-C; see :mod:`postroom.dispatch.server`."""
    from postroom.dispatch.server import serve as _serve

    return _serve(config, dev=dev)
