"""SMTP delivery: pooled connections, every conversation multiplexed in the calling thread.

:class:`SmtpTransport` delivers batches of rendered messages through one relay over at most
``connections`` pooled connections. All of a batch runs in the calling thread: each connection's
conversation (set-up, transactions, RSET) is a generator that does non-blocking I/O, and one
``poll`` waits for all of them (:mod:`.multiplexer`). The parts:

* :mod:`.settings`: :class:`SmtpSettings` and :class:`TlsMode`;
* :mod:`.session`: setting up a connection (connect, TLS, greeting, EHLO, STARTTLS, AUTH);
* :mod:`.transaction`: the conversation of one transaction, judging every reply strictly;
* :mod:`.delivery`: one job across its transactions, the stale-connection rule, the merge;
* :mod:`.breaker`: the relay's circuit breaker (``DEFERRED`` while the relay is down);
* :mod:`.envelope`: SMTPUTF8, 8BITMIME and SIZE; the DATA section;
* :mod:`.channel` and :mod:`.replies`: non-blocking sockets and the strict reply reader.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING

from postroom.transport.base import DeliveryResult, Job, OnResult, RelayState, Transport
from postroom.transport.pool import ConnectionPool
from postroom.transport.smtp.breaker import RelayBreaker
from postroom.transport.smtp.delivery import Relay
from postroom.transport.smtp.envelope import MAX_RECIPIENTS_PER_TRANSACTION
from postroom.transport.smtp.multiplexer import Batch
from postroom.transport.smtp.session import Session
from postroom.transport.smtp.settings import SmtpSettings, TlsMode

if TYPE_CHECKING:
    from postroom.config import SmtpConfig

__all__ = ["MAX_RECIPIENTS_PER_TRANSACTION", "SmtpSettings", "SmtpTransport", "TlsMode"]


class SmtpTransport(Transport):
    """Deliver through one SMTP relay; see the module docstring and :class:`SmtpSettings`.

    >>> transport = SmtpTransport(SmtpSettings(host="smtp.example.com", port=587))
    >>> results = transport.deliver_batch([("me@example.com", ["you@example.org"], raw)])
    >>> transport.close()
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        name = f"{settings.host}:{settings.port}"
        breaker = RelayBreaker(name, settings.relay_retry_initial_s, settings.relay_retry_max_s)
        self._relay = Relay(settings, settings.helo or socket.getfqdn(), breaker)
        self._pool: ConnectionPool[Session] = ConnectionPool(
            settings.connections, settings.idle_timeout_s, _close_session
        )

    @classmethod
    def from_config(cls, smtp: SmtpConfig) -> SmtpTransport:
        """Build a transport from the ``email.server.smtp`` configuration section."""
        return cls(SmtpSettings.from_config(smtp))

    def __repr__(self) -> str:
        s = self.settings
        user = f", username={s.username!r}" if s.username else ""
        return f"SmtpTransport({s.host!r}, {s.port}, tls={s.tls.value!r}{user})"

    @property
    def concurrency(self) -> int:
        """How many deliveries :meth:`deliver_batch` runs side by side: the pool size."""
        return self._pool.size

    @property
    def relay(self) -> RelayState:
        """The relay's state as the circuit breaker sees it."""
        return self._relay.breaker.state

    def deliver_batch(
        self, jobs: Iterable[Job], on_result: OnResult | None = None
    ) -> list[DeliveryResult]:
        """Deliver rendered messages side by side from this thread, one per pooled connection;
        see :meth:`Transport.deliver_batch` for the contract."""
        return Batch(self._relay, self._pool, jobs, on_result).run()

    def close(self) -> None:
        """QUIT every idle connection now and every busy one when its delivery ends.

        The transport stays usable: a later batch opens new connections.
        """
        self._pool.close()


def _close_session(session: Session) -> None:
    session.close(quit=True)
