"""The production queue engine: a Redis stream read through a consumer group.

One queue name is one stream key; every engine on it reads through the group ``postroom``, each
under its own consumer name. An entry moves through these states::

    XADD ──▶ in the stream, never delivered
               │ XREADGROUP '>'            (deliveries = 1)
               ▼
             pending for this consumer ──XACK + XDEL──▶ gone
               │ idle longer than redeliver_after_s
               ▼
             XAUTOCLAIM by any consumer    (deliveries + 1, counted by Redis)

Every entry read is either handed out or acknowledged: an entry without the payload field (not
written by postroom, or deleted while pending) is acknowledged and deleted as soon as it is read,
with one warning per engine, so it can never pile up at the head of the pending list. The
reclaim walks the whole pending list with the ``XAUTOCLAIM`` cursor, each reclaim going on where
the one before stopped, and starts again from ``0-0`` after a full pass.

``push`` stores a batch with one server-side script (``EVALSHA``, loaded again after ``NOSCRIPT``)
that XADDs every payload: one round trip, and all or nothing, since Redis runs a script as one
unit and the only XADD failures (a key of another type, the memory limit) hit the first entry,
before anything is written. Only a batch of more than 8 MiB is split, into scripts of up to 8 MiB
each (or one payload), which keeps a script short and within the server's query buffer limit; a
failure then may have stored the first parts. A batch whose reply is lost is pushed again whole
by the caller (at least once). Acknowledged entries are deleted, so ``size`` is the stream length;
un-acknowledged entries are never trimmed.

Failures of the server or the network are raised as :class:`~postroom.errors.QueueError` naming
``host:port`` (never the password); no call hangs longer than a few seconds on a dead server.
The engine heals itself: a stream or group that vanished (server restart without persistence,
``DEL`` of the key) is created again on the next call. After ``fork()`` the child opens its own
connections.

Example::

    queue = RedisQueue("redis://:secret@127.0.0.1:6379/0", name="mail")
    queue.push([b"hello"])
    [item] = queue.take(max_items=100, timeout_s=1.0)
    queue.ack([item.tag])
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TypeVar, cast
from urllib.parse import unquote, urlsplit

# Imported only when the redis engine is chosen; postroom.queue turns a missing package into
# a ConfigError with the install command.
import redis as redis_lib
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from postroom.config import redact_url
from postroom.errors import ConfigError, QueueError
from postroom.queue.base import QueueEngine, Taken

__all__ = ["RedisQueue"]

log = logging.getLogger("postroom.queue")

GROUP = "postroom"
_FIELD = b"p"
_NAME_RE = re.compile(r"[A-Za-z0-9_:.{}-]{1,200}")
_ENTRY_ID_RE = re.compile(r"\d+-\d+")
_CONNECT_TIMEOUT_S = 5.0
#: longest single XREADGROUP BLOCK; a longer take() blocks in several rounds
_MAX_BLOCK_S = 5.0
_SOCKET_TIMEOUT_S = _MAX_BLOCK_S + 5.0
#: XAUTOCLAIM calls one reclaim may make while it finds nothing to hand out
_MAX_RECLAIM_STEPS = 5
_FIRST_CURSOR = "0-0"

_T = TypeVar("_T")

# KEYS[1] is the stream, ARGV the payloads. Redis refuses a write for lack of memory only before
# a script's first write, so the loop stores every payload or none.
_PUSH_SCRIPT = (
    b"""
for i = 1, #ARGV do
  redis.call('XADD', KEYS[1], '*', '%b', ARGV[i])
end
return #ARGV
"""
    % _FIELD
)
_PUSH_SHA = hashlib.sha1(_PUSH_SCRIPT).hexdigest()
#: payload bytes per script run: Redis runs nothing else meanwhile, and buffers the whole command
_SCRIPT_MAX_BYTES = 8 * 1024 * 1024


class RedisQueue(QueueEngine):
    """A queue in a Redis stream; see the module docstring for states and guarantees.

    ``url`` is ``redis://[:password@]host[:port][/db]`` or ``rediss://`` for TLS. ``name`` is the
    stream key. ``consumer`` names this reader inside the group (default: host, pid and a random
    part, so that every process reads under its own name).
    """

    engine = "redis"

    def __init__(
        self,
        url: str,
        *,
        name: str = "postroom",
        redeliver_after_s: float = 300.0,
        consumer: str | None = None,
    ) -> None:
        super().__init__(redeliver_after_s=redeliver_after_s)
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ConfigError("url", "redis queue url must look like redis://host:6379/0")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ConfigError(
                "name", f"queue name {name!r} must be 1 to 200 letters, digits or _ - : . {{ }}"
            )
        self.name = name
        self.server = f"{parts.hostname}:{parts.port or 6379}"
        self._url = url
        self._secrets = [s for s in {parts.password, unquote(parts.password or "")} if s]
        self._fixed_consumer = consumer
        self._lock = threading.Lock()
        self._pid = -1
        self._client: redis_lib.Redis | None = None
        self._consumer = ""
        self._group_ready = False
        self._closed = False
        self._reclaim_at = 0.0  # time.monotonic() when the next XAUTOCLAIM is due
        self._reclaim_cursor = _FIRST_CURSOR  # where the walk through the pending list goes on
        self._dropped_before = False  # entries without a payload were dropped (and logged)

    def __repr__(self) -> str:
        return f"RedisQueue(server={self.server!r}, name={self.name!r})"

    @property
    def consumer(self) -> str:
        """This process's consumer name inside the group."""
        self._redis()
        return self._consumer

    # -- public contract -------------------------------------------------------------------------

    def push(self, payloads: Sequence[bytes]) -> None:
        """XADD every payload in one script run (per 8 MiB): one round trip, all or nothing."""
        if not payloads:
            return
        client = self._redis()
        for part in _parts(payloads, _SCRIPT_MAX_BYTES):
            with self._errors("push"):
                try:
                    stored = client.evalsha(_PUSH_SHA, 1, self.name, *part)
                except redis_lib.exceptions.NoScriptError:  # a new or restarted server
                    client.script_load(_PUSH_SCRIPT)
                    stored = client.evalsha(_PUSH_SHA, 1, self.name, *part)
            if stored != len(part):
                raise QueueError(
                    f"redis queue {self.name} at {self.server}: push stored {stored!r} "
                    f"of {len(part)} payloads"
                )

    def take(self, max_items: int, timeout_s: float) -> list[Taken]:
        """Reclaim overdue entries first, else block on new ones for up to ``timeout_s``."""
        if max_items < 1:
            return []
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            if time.monotonic() >= self._reclaim_at:
                items = self._with_group(partial(self._reclaim, max_items))
                if items:
                    return items
            now = time.monotonic()
            # Block in rounds that end when the next reclaim is due, so overdue entries are seen.
            block_s = min(deadline - now, max(self._reclaim_at - now, 0.001), _MAX_BLOCK_S)
            items = self._with_group(partial(self._read_new, max_items, int(block_s * 1000)))
            if items or deadline - time.monotonic() <= 0:
                return items

    def ack(self, tags: Sequence[str]) -> None:
        """XACK and XDEL the entries in one round trip; unknown tags do nothing."""
        ids = [tag for tag in tags if _ENTRY_ID_RE.fullmatch(str(tag))]
        if not ids:
            return
        client = self._redis()
        with self._errors("ack"):
            pipe = client.pipeline(transaction=False)
            pipe.xack(self.name, GROUP, *ids)
            pipe.xdel(self.name, *ids)
            pipe.execute()

    def size(self) -> int:
        """Stream length: entries waiting plus entries taken and not acknowledged."""
        client = self._redis()
        with self._errors("size"):
            return int(client.xlen(self.name))

    def close(self) -> None:
        """Drop this consumer from the group if it holds nothing, then close the connections."""
        with self._lock:
            client, self._client, self._closed = self._client, None, True
            mine = self._pid == os.getpid()
        if client is None or not mine:
            return
        try:
            pending = cast(
                list[dict[str, object]],
                client.xpending_range(self.name, GROUP, "-", "+", 1, self._consumer),
            )
            if not pending:
                client.xgroup_delconsumer(self.name, GROUP, self._consumer)
        except redis_lib.exceptions.RedisError:  # best effort on the way out
            pass
        client.close()

    # -- reading ---------------------------------------------------------------------------------

    def _reclaim(self, max_items: int) -> list[Taken]:
        """XAUTOCLAIM entries idle longer than redeliver_after_s, with their delivery counts.

        Each call goes on through the pending list where the last one stopped (the cursor is
        kept), up to ``_MAX_RECLAIM_STEPS`` steps while it finds nothing to hand out. A full
        pass ends when the cursor comes back to ``0-0``; the next pass starts after
        ``redeliver_after_s / 2`` (kept between 50 ms and 1 s), so a busy consumer does not scan
        the pending list on every take. Until then every take goes on with the walk.
        """
        client = self._redis()
        entries: list[tuple[str, bytes]] = []
        for _ in range(_MAX_RECLAIM_STEPS):
            reply = cast(
                list[object],
                client.xautoclaim(
                    self.name,
                    GROUP,
                    self._consumer,
                    min_idle_time=max(int(self.redeliver_after_s * 1000), 0),
                    start_id=self._reclaim_cursor,
                    count=max_items,
                ),
            )
            self._reclaim_cursor = _text(reply[0])
            entries = self._keep_payloads(reply[1])
            if self._reclaim_cursor == _FIRST_CURSOR:
                self._reclaim_at = time.monotonic() + min(
                    max(self.redeliver_after_s / 2, 0.05), 1.0
                )
            if entries or self._reclaim_cursor == _FIRST_CURSOR:
                break
        if not entries:
            return []
        counts = self._delivery_counts(client, [entry_id for entry_id, _ in entries])
        return [
            Taken(tag=entry_id, payload=payload, deliveries=counts.get(entry_id, 2))
            for entry_id, payload in entries
        ]

    def _delivery_counts(self, client: redis_lib.Redis, ids: list[str]) -> dict[str, int]:
        pipe = client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(self.name, GROUP, entry_id, entry_id, 1)
        counts: dict[str, int] = {}
        for rows in cast(list[list[dict[str, object]]], pipe.execute()):
            for row in rows:
                counts[_text(row["message_id"])] = int(cast(int, row["times_delivered"]))
        return counts

    def _keep_payloads(self, raw: object) -> list[tuple[str, bytes]]:
        """The entries of a reply that hold a payload; the others are acknowledged and deleted
        at once (one warning per engine), so that every entry read is handed out or gone."""
        entries, dropped = _entries(raw)
        if dropped:
            client = self._redis()
            pipe = client.pipeline(transaction=False)
            pipe.xack(self.name, GROUP, *dropped)
            pipe.xdel(self.name, *dropped)
            pipe.execute()
            level = logging.DEBUG if self._dropped_before else logging.WARNING
            self._dropped_before = True
            log.log(
                level,
                "redis queue %s at %s: acknowledged and deleted %d stream entries without a "
                "payload field (first %s); such entries are not postroom's and are dropped",
                self.name,
                self.server,
                len(dropped),
                dropped[0],
            )
        return entries

    def _read_new(self, max_items: int, block_ms: int) -> list[Taken]:
        """XREADGROUP never-delivered entries, blocking ``block_ms`` (0 or less: not at all)."""
        client = self._redis()
        reply = client.xreadgroup(
            GROUP,
            self._consumer,
            {self.name: ">"},
            count=max_items,
            block=block_ms if block_ms > 0 else None,
        )
        entries: list[tuple[str, bytes]] = []
        for _stream, stream_entries in _streams(reply):
            entries.extend(self._keep_payloads(stream_entries))
        return [Taken(tag=entry_id, payload=payload) for entry_id, payload in entries]

    def _with_group(self, call: Callable[[], _T]) -> _T:
        """Run ``call``; when the stream or group vanished, create the group and retry once."""
        with self._errors("take"):
            self._ensure_group()
            try:
                return call()
            except redis_lib.exceptions.ResponseError as exc:
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                self._group_ready = False
                self._reclaim_cursor = _FIRST_CURSOR
                self._ensure_group()
                return call()

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self._redis().xgroup_create(self.name, GROUP, id="0", mkstream=True)
        except redis_lib.exceptions.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        self._group_ready = True

    # -- connection ------------------------------------------------------------------------------

    def _redis(self) -> redis_lib.Redis:
        """The client of this process, made on first use and again after ``fork()``."""
        pid = os.getpid()
        with self._lock:
            if self._client is not None and self._pid == pid:
                return self._client
            if self._closed:
                raise QueueError(f"redis queue {self.name} at {self.server} is closed")
            self._client = self._make_client()
            self._pid = pid
            self._consumer = self._fixed_consumer or (
                f"{socket.gethostname()}-{pid}-{secrets.token_hex(3)}"
            )
            self._group_ready = False
            self._reclaim_cursor = _FIRST_CURSOR
            return self._client

    def _make_client(self) -> redis_lib.Redis:
        with self._errors("connect"):
            return redis_lib.Redis.from_url(
                self._url,
                socket_connect_timeout=_CONNECT_TIMEOUT_S,
                socket_timeout=_SOCKET_TIMEOUT_S,
                # One quick retry heals a pooled connection that a server restart broke.
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 1),
            )

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis_lib.exceptions.RedisError as exc:
            detail = redact_url(str(exc), secrets=self._secrets)
            raise QueueError(
                f"redis queue {self.name} at {self.server}: {action} failed: {detail}"
            ) from exc


def _parts(payloads: Sequence[bytes], max_bytes: int) -> Iterator[Sequence[bytes]]:
    """``payloads`` in order, in runs of at most ``max_bytes`` (a larger payload runs alone);
    a batch within the limit is given back whole, not copied."""
    if sum(map(len, payloads)) <= max_bytes:
        yield payloads
        return
    start, size = 0, 0
    for end, payload in enumerate(payloads):
        if size and size + len(payload) > max_bytes:
            yield payloads[start:end]
            start, size = end, 0
        size += len(payload)
    yield payloads[start:]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _streams(reply: object) -> list[tuple[object, object]]:
    """XREADGROUP replies as (stream, entries) pairs.

    RESP2 gives ``[[stream, [entry, ...]], ...]``; RESP3 (``?protocol=3`` in the URL) gives
    ``{stream: [[entry, ...]]}``.
    """
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(stream, value[0] if value else []) for stream, value in reply.items()]
    return [(item[0], item[1]) for item in cast(list[list[object]], reply)]


def _entries(raw: object) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Stream entries as (id, payload), and the ids of entries without our field (written by
    something else, or deleted while pending)."""
    out: list[tuple[str, bytes]] = []
    dropped: list[str] = []
    for entry_id, fields in cast(list[tuple[object, dict[bytes, bytes] | None]], raw or []):
        if fields and _FIELD in fields:
            out.append((_text(entry_id), bytes(fields[_FIELD])))
        elif entry_id is not None:
            dropped.append(_text(entry_id))
    return out, dropped
