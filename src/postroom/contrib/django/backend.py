"""The Django email backend: queue every message through postroom."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction

import postroom.client
from postroom.contrib.django.convert import to_email
from postroom.errors import MessageError, PostroomError
from postroom.message import Email
from postroom.message.schedule import due_at, due_in
from postroom.payload import keyed_message_id

__all__ = ["EmailBackend"]


@dataclass(frozen=True, slots=True)
class _Queued:
    """One Django message, converted, with how it is to be queued."""

    message: Any
    email: Email
    send_after: datetime | None
    idempotency_key: str | None


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]
    """``EMAIL_BACKEND = "postroom.contrib.django.EmailBackend"``.

    Settings: ``POSTROOM = {...}`` (the keys of the YAML file, ``{"email": {...}}``) or
    ``POSTROOM_CONFIG = "path/to/postroom.yaml"``; neither means postroom's default lookup
    (``$POSTROOM_CONFIG``, ``./postroom.yaml``, the embedded SQLite default).
    ``POSTROOM_ON_COMMIT`` (default ``True``): a message sent inside ``transaction.atomic()``
    is queued only when the transaction commits, and not at all when it rolls back.

    Attributes read from each message, all optional: ``send_at`` (a datetime; naive means
    local time), ``send_later`` (``"5m"`` or a timedelta), ``priority`` (an int, higher goes
    first), ``idempotency_key`` (see ``Email.enqueue()``). After queueing,
    ``message.postroom_id`` holds the message id.

    ``send_messages()`` returns how many messages were queued (or will be, on commit). In a
    Django test run (while ``django.core.mail.outbox`` exists) nothing is queued: like Django's
    locmem backend, each message is checked and appended to ``mail.outbox``, and captured by
    an active :func:`postroom.testing.capture` (the ``postroom_outbox`` fixture).
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        on_commit: bool | None = None,
        using: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # Django 6.1 passes the mailer's alias here
        self.fail_silently = fail_silently  # ours: Django 6.1 deprecates the base class's
        self.on_commit = (
            getattr(settings, "POSTROOM_ON_COMMIT", True) if on_commit is None else on_commit
        )
        self.using = using

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        if not email_messages:
            return 0
        queued = [q for q in map(self._convert, email_messages) if q is not None]
        if hasattr(mail, "outbox"):
            return self._keep_for_tests(queued)
        configure_from_settings()
        if self.on_commit and transaction.get_connection(self.using).in_atomic_block:
            transaction.on_commit(partial(self._submit_all, queued), using=self.using)
            return len(queued)
        return self._submit_all(queued)

    def _convert(self, message: Any) -> _Queued | None:
        try:
            return _Queued(message, to_email(message), _send_after(message), _key(message))
        except (PostroomError, ValueError, TypeError):
            if self.fail_silently:
                return None
            raise

    def _submit_all(self, queued: list[_Queued]) -> int:
        count = 0
        for item in queued:
            try:
                item.message.postroom_id = _submit(item)
            except PostroomError:
                if not self.fail_silently:
                    raise
            else:
                count += 1
        return count

    def _keep_for_tests(self, queued: list[_Queued]) -> int:
        from postroom.testing import active_capture

        capture = active_capture()
        for item in queued:
            item.email.validate()
            if capture is not None:
                item.message.postroom_id = _submit(item)
            kept = copy.deepcopy(item.message)
            kept.sent_using = getattr(self, "alias", None)  # as Django 6.1's locmem notes it
            mail.outbox.append(kept)
        return len(queued)


def _submit(item: _Queued) -> str:
    return postroom.client.submit(
        item.email, send_after=item.send_after, idempotency_key=item.idempotency_key
    )


def _send_after(message: Any) -> datetime | None:
    when, delay = getattr(message, "send_at", None), getattr(message, "send_later", None)
    if when is not None and delay is not None:
        raise MessageError("set send_at or send_later on the message, not both")
    if when is not None:
        if not isinstance(when, datetime):
            raise MessageError(f"send_at must be a datetime, not {type(when).__name__}")
        return due_at(when)
    if delay is not None:
        if not isinstance(delay, str | timedelta):
            raise MessageError(f"send_later must be a duration or a timedelta, not {delay!r}")
        return due_in(delay)
    return None


def _key(message: Any) -> str | None:
    key = getattr(message, "idempotency_key", None)
    if key is not None:
        keyed_message_id(key)  # refuses a bad key now, naming the problem
    return key


# -- the process-wide configuration from settings ---------------------------------------------

_lock = threading.Lock()
# the settings value (as JSON) the default outbox was configured from; None: the default lookup
_configured_from: str | None = None
# the POSTROOM and POSTROOM_CONFIG values last looked at (None: never looked)
_last_seen: tuple[object, object] | None = None


def configure_from_settings() -> None:
    """Configure the process-wide outbox from ``POSTROOM`` / ``POSTROOM_CONFIG``, once per
    distinct value (so ``override_settings`` in tests takes effect)."""
    global _configured_from, _last_seen
    seen = (getattr(settings, "POSTROOM", None), getattr(settings, "POSTROOM_CONFIG", None))
    if _last_seen is not None and seen[0] is _last_seen[0] and seen[1] == _last_seen[1]:
        return  # the same settings objects as last time (the common case: no JSON needed)
    source = _settings_source()
    fingerprint = None if source is None else json.dumps(source, sort_keys=True, default=str)
    with _lock:
        if fingerprint != _configured_from:
            postroom.client.configure(source)
            _configured_from = fingerprint
        _last_seen = seen  # only once the settings were applied


def _settings_source() -> dict[str, Any] | str | None:
    inline = getattr(settings, "POSTROOM", None)
    path = getattr(settings, "POSTROOM_CONFIG", None)
    if inline is not None and path is not None:
        raise ImproperlyConfigured("set POSTROOM or POSTROOM_CONFIG, not both")
    if inline is not None and not isinstance(inline, dict):
        raise ImproperlyConfigured(f"POSTROOM must be a dict like the YAML file, not {inline!r}")
    if path is not None:
        return str(path)
    return inline
