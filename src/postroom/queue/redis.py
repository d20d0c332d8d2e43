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

GROUP = "postroom"
_FIELD = b"p"
_NAME_RE = re.compile(r"[A-Za-z0-9_:.{}-]{1,200}")
_ENTRY_ID_RE = re.compile(r"\d+-\d+")
_CONNECT_TIMEOUT_S = 5.0
#: longest single XREADGROUP BLOCK; a longer take() blocks in several rounds
_MAX_BLOCK_S = 5.0
_SOCKET_TIMEOUT_S = _MAX_BLOCK_S + 5.0

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

        Runs every ``redeliver_after_s / 2`` (kept between 50 ms and 1 s) per engine, and again at
        once while it keeps finding full batches, so a busy consumer does not scan the pending
        list on every take.
        """
        client = self._redis()
        reply = cast(
            list[object],
            client.xautoclaim(
                self.name,
                GROUP,
                self._consumer,
                min_idle_time=max(int(self.redeliver_after_s * 1000), 0),
                start_id="0-0",
                count=max_items,
            ),
        )
        entries = _entries(reply[1])
        if len(entries) < max_items:
            self._reclaim_at = time.monotonic() + min(max(self.redeliver_after_s / 2, 0.05), 1.0)
        if not entries:
            return []
        pipe = client.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(self.name, GROUP, entry_id, entry_id, 1)
        counts: dict[str, int] = {}
        for rows in cast(list[list[dict[str, object]]], pipe.execute()):
            for row in rows:
                counts[_text(row["message_id"])] = int(cast(int, row["times_delivered"]))
        return [
            Taken(tag=entry_id, payload=payload, deliveries=counts.get(entry_id, 2))
            for entry_id, payload in entries
        ]

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
            entries.extend(_entries(stream_entries))
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


def _entries(raw: object) -> list[tuple[str, bytes]]:
    """Stream entries as (id, payload); entries without our field (deleted) are skipped."""
    out: list[tuple[str, bytes]] = []
    for entry_id, fields in cast(list[tuple[object, dict[bytes, bytes] | None]], raw or []):
        if fields and _FIELD in fields:
            out.append((_text(entry_id), bytes(fields[_FIELD])))
    return out
