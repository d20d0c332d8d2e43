"""A transport that keeps every delivery in memory: the tool for unit tests.

By default every delivery succeeds for every recipient. A ``responder`` function scripts other
outcomes, the way a mock transport does for an HTTP client::

    def flaky(mail_from, recipients, message):
        return DeliveryResult(Outcome.TEMPORARY, Reply(451, "try later"))

    transport = MemoryTransport(responder=flaky)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from postroom.transport.base import (
    DeliveryResult,
    Job,
    OnResult,
    Outcome,
    Reply,
    Transport,
    envelope_problem,
    unsendable,
)

__all__ = ["Delivery", "MemoryTransport", "Responder"]

Responder = Callable[[str, Sequence[str], bytes], DeliveryResult]
"""``(mail_from, recipients, message) -> DeliveryResult``; raise in it to simulate a crash."""


class Delivery(NamedTuple):
    """One delivery handed to the responder, whatever its outcome."""

    mail_from: str
    recipients: tuple[str, ...]
    message: bytes


class MemoryTransport(Transport):
    """Records every delivery; thread-safe.

    ``deliveries`` lists every sendable job in the order it was read (also those the responder
    failed, and those whose responder raised); ``results`` the result of each one that got one.
    Without a responder each delivery is ``SENT`` to all recipients with ``250 OK``.

    >>> transport = MemoryTransport()
    >>> [result] = transport.deliver_batch([("a@example.com", ["b@example.com"], b"Hi\\r\\n")])
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

    def deliver_batch(
        self, jobs: Iterable[Job], on_result: OnResult | None = None
    ) -> list[DeliveryResult]:
        """Deliver one job after the other, reading each only when the one before is done."""
        results = []
        for position, job in enumerate(jobs):
            result = self._deliver(*job)
            results.append(result)
            if on_result is not None:
                on_result(position, result)
        return results

    def _deliver(self, mail_from: str, recipients: Sequence[str], message: bytes) -> DeliveryResult:
        problem = envelope_problem(mail_from, recipients)
        if problem is not None:
            return unsendable(problem)
        delivery = Delivery(mail_from, tuple(dict.fromkeys(recipients)), bytes(message))
        with self._lock:
            self._deliveries.append(delivery)
        if self._responder is None:
            ok = Reply(250, "OK")
            replies = dict.fromkeys(delivery.recipients, ok)
            result = DeliveryResult(Outcome.SENT, ok, delivery.recipients, replies=replies)
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
