"""A transport that keeps every delivery in memory: the tool for unit tests.

By default every delivery succeeds for every recipient. A ``responder`` function scripts other
outcomes, the way a mock transport does for an HTTP client::

    def flaky(mail_from, recipients, message):
        return DeliveryResult(Outcome.TEMPORARY, Reply(451, "try later"))

    transport = MemoryTransport(responder=flaky)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

from postroom.transport.base import DeliveryResult, Outcome, Reply, Transport

__all__ = ["Delivery", "MemoryTransport", "Responder"]

Responder = Callable[[str, Sequence[str], bytes], DeliveryResult]
"""``(mail_from, recipients, message) -> DeliveryResult``; raise in it to simulate a crash."""


class Delivery(NamedTuple):
    """One call to :meth:`MemoryTransport.deliver`, whatever its outcome."""

    mail_from: str
    recipients: tuple[str, ...]
    message: bytes


class MemoryTransport(Transport):
    """Records every :meth:`deliver` call; thread-safe.

    ``deliveries`` lists every attempt in call order (also those the responder failed, and
    those whose responder raised); ``results`` the result returned for each attempt that
    returned one. Without a responder each delivery is ``SENT`` to all recipients with
    ``250 OK``.

    >>> transport = MemoryTransport()
    >>> result = transport.deliver("a@example.com", ["b@example.com"], b"Subject: hi\\r\\n\\r\\n")
    >>> result.outcome
    <Outcome.SENT: 'sent'>
    >>> transport.deliveries[0].recipients
    ('b@example.com',)
    """

    def __init__(self, responder: Responder | None = None) -> None:
        self._responder = responder
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._results: list[DeliveryResult] = []
        self.closed = False

    def deliver(self, mail_from: str, recipients: Sequence[str], message: bytes) -> DeliveryResult:
        """Record the delivery, then answer with the responder's result (or ``SENT``)."""
        delivery = Delivery(mail_from, tuple(recipients), bytes(message))
        with self._lock:
            self._deliveries.append(delivery)
        if self._responder is None:
            result = DeliveryResult(Outcome.SENT, Reply(250, "OK"), accepted=delivery.recipients)
        else:
            result = self._responder(mail_from, delivery.recipients, delivery.message)
            if not isinstance(result, DeliveryResult):
                raise TypeError(
                    f"the responder returned {type(result).__name__}, not a DeliveryResult"
                )
        with self._lock:
            self._results.append(result)
        return result

    @property
    def deliveries(self) -> list[Delivery]:
        """A snapshot of every delivery so far, oldest first."""
        with self._lock:
            return list(self._deliveries)

    @property
    def results(self) -> list[DeliveryResult]:
        """A snapshot of the results returned so far, oldest first."""
        with self._lock:
            return list(self._results)

    def clear(self) -> None:
        """Forget every recorded delivery and result."""
        with self._lock:
            self._deliveries.clear()
            self._results.clear()

    def close(self) -> None:
        """Mark the transport closed (``closed`` becomes ``True``); deliveries still work."""
        self.closed = True
