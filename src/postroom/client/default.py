"""The process-wide default outbox behind ``Email.enqueue()``, ``postroom.configure()`` and
``postroom.flush()``.

Nothing happens at import time. The default outbox is created on first use from
:func:`postroom.config.load_config` (``$POSTROOM_CONFIG``, else ``./postroom.yaml``, else the
embedded default), or from whatever :func:`configure` was given. A forked child keeps the
parent's default outbox object, which starts afresh there (see :mod:`postroom.client.outbox`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from postroom.client.outbox import Outbox, Submittable

if TYPE_CHECKING:
    from postroom.config import Config

__all__ = ["configure", "default_outbox", "flush", "submit"]

_lock = threading.Lock()
_outbox: Outbox | None = None
_fork_hook_installed = False


def configure(source: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None) -> Config:
    """Set the configuration of the process-wide outbox and return it.

    ``source`` is a YAML file path, a mapping shaped like the file, a ready
    :class:`~postroom.config.Config`, or ``None`` for the default lookup. A previous default
    outbox is flushed and closed first (for up to its flush timeout), so nothing it buffered is
    lost. Raises :class:`~postroom.errors.ConfigError` for a bad configuration, including a
    Redis queue without redis-py installed.

    >>> postroom.configure({"email": {"queue": {"default": {"engine": "redis"}}}})  # doctest: +SKIP
    """
    from postroom.config import Config, load_config

    config = source if isinstance(source, Config) else load_config(source)
    replacement = Outbox(config)
    global _outbox
    with _locked():
        previous, _outbox = _outbox, replacement
    if previous is not None:
        previous.close()
    return config


def default_outbox() -> Outbox:
    """The process-wide outbox, created on first use."""
    outbox = _outbox
    if outbox is not None:
        return outbox
    return _create_default()


def _create_default() -> Outbox:
    global _outbox
    with _locked():
        if _outbox is None:
            _outbox = Outbox()
        return _outbox


def flush(timeout: float | None = None) -> int:
    """Wait until the default outbox's buffer is pushed (up to ``timeout`` seconds, default the
    configured ``email.flush-timeout``); return how many emails are still waiting."""
    outbox = _outbox
    return 0 if outbox is None else outbox.flush(timeout)


def submit(
    email: Submittable,
    *,
    send_after: datetime | None = None,
    outbox: Outbox | None = None,
    idempotency_key: str | None = None,
    timeout_s: float | None = None,
) -> str:
    """Queue ``email`` on ``outbox`` (default: the process-wide one); return its message id.

    This is what ``Email.enqueue()``, ``send_later()`` and ``send_at()`` call. See
    :meth:`Outbox.submit` for what it checks and raises.
    """
    target = outbox if outbox is not None else (_outbox or _create_default())
    return target.submit(
        email, send_after=send_after, idempotency_key=idempotency_key, timeout_s=timeout_s
    )


def _locked() -> threading.Lock:
    """The module lock, with a fork hook so a child never inherits it locked."""
    global _fork_hook_installed
    if not _fork_hook_installed:
        _fork_hook_installed = True
        os.register_at_fork(after_in_child=_reset_lock_in_child)
    return _lock


def _reset_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()
