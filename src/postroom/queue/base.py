"""The queue engine interface: the hand-over between application processes and the dispatcher.

Payloads are opaque ``bytes``. Every engine keeps the same promises:

* ``push(payloads)`` returns only when every payload is stored (as durably as the engine
  stores anything). If it raises :class:`~postroom.errors.QueueError`, any subset may have been
  stored, so the caller pushes the batch again: delivery is *at least once*, and the consumer
  (ingest) is idempotent on the message id inside the payload.
* ``take(max_items, timeout_s)`` waits up to ``timeout_s`` for at least one payload and returns
  up to ``max_items``, oldest first as far as the engine can tell. A taken item is invisible to
  other consumers until it is acknowledged, or until ``redeliver_after_s`` has passed without an
  acknowledgement (its consumer died): then any consumer may take it again, with
  ``Taken.deliveries`` counting up. Nothing is lost between take and ack.
* ``ack(tags)`` removes taken items for good. Acking an unknown or already-acked tag is a no-op.
* ``size()`` counts items pushed and not yet acknowledged (waiting plus taken).

Engines are safe to share between threads of one process. They are not inherited across
``fork()``: a child process opens its own (see :mod:`postroom.client`).

State of one item::

    pushed ──take──▶ taken ──ack──▶ gone
                       │
                       └─ not acked within redeliver_after_s ──▶ pushed again (deliveries + 1)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from postroom._quick_init import quick_init

__all__ = ["QueueEngine", "Taken"]


@quick_init
@dataclass(frozen=True, slots=True)
class Taken:
    """One item handed to a consumer: ``tag`` is the receipt to pass to :meth:`QueueEngine.ack`."""

    tag: str
    payload: bytes
    deliveries: int = 1


class QueueEngine(ABC):
    """Push, take, acknowledge: see the module docstring for the guarantees."""

    #: engine name as written in the configuration (``redis``, ``sqlite``, ``memory``)
    engine: str = ""

    def __init__(self, *, redeliver_after_s: float = 300.0) -> None:
        self.redeliver_after_s = redeliver_after_s

    @abstractmethod
    def push(self, payloads: Sequence[bytes]) -> None:
        """Store every payload; raise :class:`~postroom.errors.QueueError` on failure."""

    @abstractmethod
    def take(self, max_items: int, timeout_s: float) -> list[Taken]:
        """Wait up to ``timeout_s`` for at least one item; return up to ``max_items``."""

    @abstractmethod
    def ack(self, tags: Sequence[str]) -> None:
        """Remove taken items for good."""

    @abstractmethod
    def size(self) -> int:
        """How many items are pushed and not yet acknowledged."""

    def close(self) -> None:  # noqa: B027 - optional for engines that hold nothing
        """Release connections and files. The engine is unusable afterwards."""

    def __enter__(self) -> QueueEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
