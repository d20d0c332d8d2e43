"""The Outbox: what ``Email.enqueue()`` does in the application process.

``submit()`` runs in the caller's thread and never touches the network: it validates the
email, gives it a message id, takes a snapshot (``Email.to_json()``, so changing the Email
afterwards changes nothing), puts the snapshot on a bounded in-memory buffer and returns the id.
One background pusher thread per outbox and process wraps the snapshots into payloads and pushes
them to the queue engine in batches. Both threads share one interpreter lock, so every
microsecond either spends per email limits how many emails a process can queue per second.

States of the pusher::

    not started ──first submit()──▶ idle ──item arrives──▶ pushing ──ok──▶ idle (or pushing)
                                     ▲                        │
                                     │                   push raised
                                     │                        ▼
                                     └──── ok ◀── pushing ◀── backing off (50 ms doubling to
                                                                5 s, jittered; one warning
                                                                per outage, one info on recovery)
    any state ──close() drained or timed out──▶ stopped

A failed batch stays at the front of the buffer and is pushed again, with whatever arrived since:
nothing is dropped, and an engine that stored part of a failed batch sees those ids twice
(ingest is idempotent on the id). The buffer counts items being pushed too, so ``buffer`` bounds
everything the process holds; when it is full, ``submit()`` waits up to ``enqueue_timeout_s`` and
then raises :class:`~postroom.errors.BufferFullError`. A batch takes at most half the buffer (and
at most ``MAX_BATCH``), so callers keep filling the other half while a batch is on its way.

Processes: at interpreter exit every outbox is flushed for up to its ``flush_timeout_s``, with
a warning naming how many emails could not be pushed. Across ``os.fork()`` the buffer lock is
held, so a fork cannot split an append; the child starts with an empty buffer (the parent pushes
what it had buffered), and gets its own pusher thread and its own engine on its first submit.
Under uWSGI, enable ``py-call-osafterfork`` (or ``lazy-apps``): a fork that skips Python's
at-fork hooks leaves any thread of the parent, the pusher included, unusable in the child.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Protocol

from postroom.client.buffer import Buffer
from postroom.errors import ConfigError, LimitError, MessageError, QueueError
from postroom.payload import LATEST_TIME, encode_email_json, keyed_message_id, new_message_id
from postroom.queue import QueueEngine, engine_class, open_queue

if TYPE_CHECKING:
    from postroom.config import Config

__all__ = ["MAX_BATCH", "Outbox", "Submittable", "close_all", "retry_delay_s"]

_log = logging.getLogger("postroom.client")

#: most payloads handed to one ``QueueEngine.push()`` call
MAX_BATCH = 500

# An email's rendered size is at most this many bytes per character of its JSON snapshot, plus
# the overhead: quoted-printable writes a 4-byte character as 12 bytes, encoded-words about as
# much, and a text part generated from the HTML repeats it. Below that bound nothing is rendered.
_BYTES_PER_CHAR = 30
_MIME_OVERHEAD = 64 * 1024

_UNOPENED_LABEL = "queue engine"

# one snapshot: (message id, Email.to_json(), send_after, queued_at)
_Item = tuple[str, str, datetime, datetime]


class Submittable(Protocol):
    """What :meth:`Outbox.submit` needs from an email (:class:`postroom.Email` has it)."""

    def validate(self) -> object:
        """Raise a :class:`~postroom.errors.MessageError` when the email cannot be sent."""

    def ensure_identity(self) -> object:
        """Fix the Message-ID and Date, so every retry renders the same message."""

    def to_json(self) -> str:
        """The email as compact JSON text (``Email.to_dict()`` in JSON): the snapshot."""

    def to_bytes(self) -> bytes:
        """The rendered message (measured against ``email.max-message-size``)."""

    @property
    def envelope_recipients(self) -> list[str]:
        """Every recipient, Bcc included (counted against ``email.max-recipients``)."""

    @property
    def to(self) -> list[str]: ...

    @property
    def cc(self) -> list[str]: ...

    @property
    def bcc(self) -> list[str]: ...


def retry_delay_s(
    failures: int,
    *,
    initial_s: float = 0.05,
    max_s: float = 5.0,
    jitter: float = 0.2,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after the ``failures``-th push failure in a row (1-based).

    ``initial_s`` doubling per failure up to ``max_s``, then spread by ``± jitter`` so that many
    processes that lost the same Redis do not come back in step.

    >>> retry_delay_s(1, rng=lambda: 0.5), retry_delay_s(3, rng=lambda: 0.5)
    (0.05, 0.2)
    """
    base_s = min(initial_s * 2.0 ** min(max(failures - 1, 0), 30), max_s)
    return base_s * (1.0 + jitter * (2.0 * rng() - 1.0))


class Outbox:
    """An explicit, non-global client: a buffer, a pusher thread and a queue engine.

    ``config`` defaults to :func:`postroom.config.load_config` with no argument (the
    ``$POSTROOM_CONFIG`` file, else ``./postroom.yaml``, else the embedded default). ``queue``
    overrides the configured engine: an engine instance (used as is, also in a forked child, and
    not closed by the outbox) or a factory called in the pusher thread (called again in a forked
    child; its engine is closed with the outbox). ``buffer``, ``enqueue_timeout_s`` and
    ``flush_timeout_s`` override ``email.buffer``, ``email.enqueue-timeout`` and
    ``email.flush-timeout``.

    >>> from postroom.queue.memory import MemoryQueue
    >>> with Outbox(queue=MemoryQueue()) as outbox:  # doctest: +SKIP
    ...     message_id = email.enqueue(outbox=outbox)
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        queue: QueueEngine | Callable[[], QueueEngine] | None = None,
        buffer: int | None = None,
        enqueue_timeout_s: float | None = None,
        flush_timeout_s: float | None = None,
    ) -> None:
        if config is None:
            from postroom.config import load_config

            config = load_config(None)
        self.config = config
        email_cfg = config.email
        self.capacity = email_cfg.buffer if buffer is None else buffer
        self.enqueue_timeout_s = (
            email_cfg.enqueue_timeout.total_seconds()
            if enqueue_timeout_s is None
            else enqueue_timeout_s
        )
        self.flush_timeout_s = (
            email_cfg.flush_timeout.total_seconds() if flush_timeout_s is None else flush_timeout_s
        )
        self.max_message_size = email_cfg.max_message_size
        self.max_recipients = email_cfg.max_recipients
        _require("buffer", self.capacity, 1)
        _require("enqueue_timeout_s", self.enqueue_timeout_s, 0)
        _require("flush_timeout_s", self.flush_timeout_s, 0)
        self._engine: QueueEngine | None = None
        self._factory: Callable[[], QueueEngine] | None = None
        if queue is None:
            queue_cfg = email_cfg.queue["default"]
            engine_class(queue_cfg.engine)  # refuse an unknown engine or missing package now
            self._factory = partial(open_queue, queue_cfg)
            self.engine_label = f"{queue_cfg.engine} queue {queue_cfg.name!r}"
        elif isinstance(queue, QueueEngine):
            self._engine = queue
            self.engine_label = _label(queue)
        else:
            self._factory = queue
            self.engine_label = _UNOPENED_LABEL
        self._buffer: Buffer[_Item] = Buffer(self.capacity)
        self._batch_max = min(MAX_BATCH, max(1, self.capacity // 2))
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._outage_since: float | None = None
        self._failures = 0
        _track(self)

    def __repr__(self) -> str:
        return f"<Outbox {self.engine_label} pending={len(self._buffer)}/{self.capacity}>"

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the caller's side ----------------------------------------------------------------------

    def submit(
        self,
        email: Submittable,
        *,
        send_after: datetime | None = None,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Queue ``email`` to be sent at ``send_after`` (``None`` or a past time: now).

        ``timeout_s`` is how long to wait while the buffer is full (default
        ``enqueue_timeout_s``; ``0`` never waits).

        With ``idempotency_key`` the message id is
        :func:`~postroom.payload.keyed_message_id` of the key, so the database keeps at most
        one message per key (see ``Email.enqueue()``).

        Returns the message id at once; the push happens in the background. A naive
        ``send_after`` is local time. Raises :class:`~postroom.errors.MessageError` for an
        invalid email or a send time after :data:`~postroom.payload.LATEST_TIME` (nothing is
        queued), :class:`~postroom.errors.LimitError` for an email over
        ``email.max-message-size`` or ``email.max-recipients``,
        :class:`~postroom.errors.BufferFullError` when the
        buffer stayed full for ``enqueue_timeout_s``, :class:`~postroom.errors.QueueError` after
        :meth:`close`.
        """
        message_id = (
            new_message_id() if idempotency_key is None else keyed_message_id(idempotency_key)
        )
        email.validate()
        email.ensure_identity()
        self._check_recipients(email)
        now = datetime.now(UTC)
        when = now if send_after is None else max(_utc(send_after), now)
        snapshot = email.to_json()
        if len(snapshot) * _BYTES_PER_CHAR + _MIME_OVERHEAD > self.max_message_size:
            self._check_size(email)  # only a large email can be too large: render it
        item: _Item = (message_id, snapshot, when, now)
        if self._thread is None:
            self._start_pusher()
        self._buffer.put(item, self.enqueue_timeout_s if timeout_s is None else timeout_s)
        return message_id

    def _check_recipients(self, email: Submittable) -> None:
        limit = self.max_recipients
        if len(email.to) + len(email.cc) + len(email.bcc) <= limit:
            return  # duplicates only make the envelope shorter
        count = len(email.envelope_recipients)
        if count > limit:
            raise LimitError(
                "email.max-recipients",
                count,
                limit,
                f"the email has {count} recipients (to, cc and bcc); "
                f"email.max-recipients allows {limit}",
            )

    def _check_size(self, email: Submittable) -> None:
        size, limit = len(email.to_bytes()), self.max_message_size
        if size > limit:
            raise LimitError(
                "email.max-message-size",
                size,
                limit,
                f"the rendered email is {size} bytes; email.max-message-size allows {limit}",
            )

    def enqueue(self, email: Submittable) -> str:
        """Queue ``email`` to be sent now; return its message id. See :meth:`submit`."""
        return self.submit(email)

    def pending(self) -> int:
        """How many emails this process holds that the engine has not confirmed yet."""
        return len(self._buffer)

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait until the buffer is pushed, up to ``timeout_s`` (default ``flush_timeout_s``).

        Returns how many emails are still waiting: 0 when everything reached the engine.
        """
        return self._buffer.wait_empty(self.flush_timeout_s if timeout_s is None else timeout_s)

    def close(self, timeout_s: float | None = None) -> int:
        """Refuse new emails, flush for up to ``timeout_s``, stop the pusher, close the engine.

        Returns how many emails could not be pushed; a warning on ``postroom.client`` names the
        number when it is not zero. Calling it again is harmless.
        """
        if self._stop.is_set():
            return len(self._buffer)  # closed before: reported then
        self._buffer.close()
        left = self.flush(timeout_s)
        self._stop.set()
        self._buffer.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(0.05 if left else 1.0)
            left = len(self._buffer)
        if left:
            _log.warning(
                "%s lost: not pushed to the %s before the outbox closed "
                "(the queue engine is unreachable or slow)",
                _emails(left, "was", "were"),
                self.engine_label,
            )
        if thread is None or not thread.is_alive():
            self._close_engine()
        _live.discard(self)
        return left

    # -- the pusher thread ----------------------------------------------------------------------

    def _start_pusher(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._buffer.closed:
                return
            thread = threading.Thread(target=self._run, name="postroom-outbox-pusher", daemon=True)
            thread.start()
            self._thread = thread
        _hook_process_exit()

    def _run(self) -> None:
        covered = 0  # buffer items (from the front) that `payloads` stands for
        payloads: list[bytes] = []
        while True:
            if covered == 0:
                items = self._buffer.next_batch(self._batch_max)
                if items is None:
                    return
            else:  # retrying: the failed batch is still at the front; take what arrived since
                items = self._buffer.peek(covered, MAX_BATCH - covered)
            covered += len(items)
            payloads.extend(_encode_all(items))
            if self._push(payloads):
                self._buffer.commit(covered)
                covered, payloads = 0, []
            elif self._stop.wait(retry_delay_s(self._failures)):
                return

    def _push(self, payloads: list[bytes]) -> bool:
        """Push once; keep the outage state and its two log lines. True when pushed."""
        try:
            if payloads:
                self._open_engine().push(payloads)
        except Exception as exc:
            self._failures += 1
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                _log.warning(
                    "cannot push to the %s (%s: %s); %s buffered, to be pushed when it is "
                    "back (retrying with backoff)",
                    self.engine_label,
                    type(exc).__name__,
                    exc,
                    _emails(len(self._buffer), "is", "are"),
                    exc_info=not isinstance(exc, QueueError),
                )
            return False
        if self._outage_since is not None:
            _log.info(
                "the %s is reachable again after %.1fs; pushed %s that waited",
                self.engine_label,
                time.monotonic() - self._outage_since,
                _emails(len(payloads)),
            )
            self._outage_since = None
            self._failures = 0
        return True

    def _open_engine(self) -> QueueEngine:
        engine = self._engine
        if engine is None:
            assert self._factory is not None
            engine = self._engine = self._factory()
            if self.engine_label == _UNOPENED_LABEL:
                self.engine_label = _label(engine)
        return engine

    def _close_engine(self) -> None:
        engine, owned = self._engine, self._factory is not None
        if engine is not None and owned:
            self._engine = None
            try:
                engine.close()
            except Exception:
                _log.debug("closing the %s failed", self.engine_label, exc_info=True)

    # -- fork --------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        self._start_lock.acquire()
        self._buffer.before_fork()

    def _after_fork_in_parent(self) -> None:
        self._buffer.after_fork_in_parent()
        self._start_lock.release()

    def _after_fork_in_child(self) -> None:
        self._start_lock = threading.Lock()
        self._buffer.after_fork_in_child()
        self._thread = None
        self._stop = threading.Event()
        self._outage_since, self._failures = None, 0
        if self._factory is not None and self._engine is not None:
            # The parent's connection is the parent's: never use it here, and never close it
            # either (closing could tear down a socket or file lock the parent still uses).
            _inherited_engines.append(self._engine)
            self._engine = None


def _utc(when: datetime) -> datetime:
    """``when`` in UTC (naive means local time); refuses times a payload cannot carry."""
    try:
        utc = when.astimezone(UTC)
    except (OverflowError, OSError, ValueError):
        utc = None
    if utc is None or utc > LATEST_TIME:
        raise MessageError(
            f"send time {when.isoformat()} is too late or cannot be represented in UTC: "
            f"postroom schedules up to {LATEST_TIME:%Y-%m-%d}, so that its expiry "
            "(send time + email.server.max-time) stays representable"
        )
    return utc


def _label(engine: QueueEngine) -> str:
    """``redis queue 'mail'``: names the engine in log lines, never its URL (passwords)."""
    name = getattr(engine, "name", None)
    kind = engine.engine or type(engine).__name__
    return f"{kind} queue {name!r}" if isinstance(name, str) else f"{kind} queue"


def _require(name: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value!r}")


def _emails(count: int, singular: str = "", plural: str = "") -> str:
    """``"1 email was"``, ``"3 emails were"``: log lines that read well."""
    noun, verb = ("email", singular) if count == 1 else ("emails", plural)
    return f"{count} {noun} {verb}".rstrip()


def _encode_all(items: list[_Item]) -> list[bytes]:
    out = []
    for message_id, email_json, send_after, queued_at in items:
        try:
            out.append(encode_email_json(message_id, email_json, send_after, queued_at))
        except (TypeError, ValueError) as exc:  # not UTF-8 text (a lone surrogate): a bug
            _log.error("email %s cannot be serialised and is dropped: %s", message_id, exc)
    return out


# -- process lifecycle: every live outbox, fork hooks, interpreter exit ------------------------

_registry_lock = threading.Lock()
_live: weakref.WeakSet[Outbox] = weakref.WeakSet()
_hooks_installed = False
_forking: list[Outbox] = []
_inherited_engines: list[QueueEngine] = []
_exit_hooked_pid: int | None = None


def _track(outbox: Outbox) -> None:
    global _hooks_installed
    with _registry_lock:
        _live.add(outbox)
        if not _hooks_installed:
            os.register_at_fork(
                before=_before_fork,
                after_in_parent=_after_fork_in_parent,
                after_in_child=_after_fork_in_child,
            )
            atexit.register(close_all)
            _hooks_installed = True


def _before_fork() -> None:
    _registry_lock.acquire()
    _forking[:] = list(_live)
    for outbox in _forking:
        outbox._before_fork()


def _after_fork_in_parent() -> None:
    for outbox in reversed(_forking):
        outbox._after_fork_in_parent()
    _forking.clear()
    _registry_lock.release()


def _after_fork_in_child() -> None:
    global _registry_lock
    for outbox in _forking:
        outbox._after_fork_in_child()
    _forking.clear()
    _registry_lock = threading.Lock()


def close_all() -> int:
    """Close every live outbox, each within its own ``flush_timeout_s`` counted from now.

    Runs at interpreter exit; returns how many emails could not be pushed in all.
    """
    start = time.monotonic()
    left = 0
    for outbox in list(_live):
        elapsed_s = time.monotonic() - start
        left += outbox.close(max(outbox.flush_timeout_s - elapsed_s, 0.0))
    return left


def _hook_process_exit() -> None:
    """Also flush in a ``multiprocessing`` child, which ends with ``os._exit()`` (no atexit)."""
    global _exit_hooked_pid
    multiprocessing = sys.modules.get("multiprocessing")
    pid = os.getpid()
    if multiprocessing is None or _exit_hooked_pid == pid:
        return
    _exit_hooked_pid = pid
    if multiprocessing.parent_process() is not None:
        from multiprocessing import util

        util.Finalize(None, close_all, exitpriority=100)
