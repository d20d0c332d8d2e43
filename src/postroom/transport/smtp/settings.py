"""The settings of an SMTP transport: one value object, validated once when it is built."""

from __future__ import annotations

import enum
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from postroom.errors import ConfigError

if TYPE_CHECKING:
    from postroom.config import SmtpConfig

__all__ = ["IMPLICIT_TLS_PORT", "SmtpSettings", "TlsMode"]

IMPLICIT_TLS_PORT = 465
_KEY = "email.server.smtp"


class TlsMode(enum.StrEnum):
    """How the connection is encrypted (key ``email.server.smtp.tls``).

    ``AUTO``: implicit TLS on port 465, else STARTTLS when the server offers it; without the
    offer the session stays plain, but a password is never sent in clear. ``STARTTLS`` and
    ``IMPLICIT`` insist on TLS; ``NONE`` never encrypts (not even the password).
    """

    AUTO = "auto"
    STARTTLS = "starttls"
    IMPLICIT = "implicit"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where and how to deliver: the relay, TLS, login, pool size, timeouts and backoff.

    Timeouts: ``connect_timeout_s`` covers the TCP connection, an implicit TLS handshake and the
    greeting; ``command_timeout_s`` the reply to each later command; ``data_timeout_s`` the
    reply to the final dot. Each counts from the moment its reply became due.
    ``relay_retry_initial_s`` / ``relay_retry_max_s``: how long the relay rests after a failure
    of its own (doubling, jittered). ``ssl_context`` replaces the default context entirely.

    >>> SmtpSettings(host="smtp.example.com", port=587, tls=TlsMode.STARTTLS).implicit_tls
    False
    """

    host: str = "localhost"
    port: int = 25
    tls: TlsMode = TlsMode.AUTO
    verify: bool = True
    username: str = ""
    password: str = field(default="", repr=False)
    identity: str = ""
    auth_host: str = ""
    connections: int = 16
    connect_timeout_s: float = 30.0
    command_timeout_s: float = 300.0
    data_timeout_s: float = 600.0
    idle_timeout_s: float = 60.0
    helo: str | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    relay_retry_initial_s: float = 5.0
    relay_retry_max_s: float = 300.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "tls", TlsMode(self.tls))
        except ValueError:
            modes = ", ".join(mode.value for mode in TlsMode)
            raise ConfigError(f"{_KEY}.tls", f"{self.tls!r} is not one of {modes}") from None
        _check_relay(self)
        _check_numbers(self)

    @classmethod
    def from_config(cls, smtp: SmtpConfig) -> SmtpSettings:
        """The settings of the ``email.server.smtp`` configuration section."""
        return cls(
            host=smtp.host,
            port=smtp.port,
            tls=TlsMode(smtp.tls),
            verify=smtp.verify,
            username=smtp.auth.username,
            password=smtp.auth.password.reveal(),
            identity=smtp.auth.identity,
            auth_host=smtp.auth.host,
            connections=smtp.connections,
            connect_timeout_s=smtp.connect_timeout.total_seconds(),
            command_timeout_s=smtp.command_timeout.total_seconds(),
            data_timeout_s=smtp.data_timeout.total_seconds(),
            idle_timeout_s=smtp.idle_timeout.total_seconds(),
            helo=smtp.helo,
        )

    @property
    def implicit_tls(self) -> bool:
        """TLS from the first byte."""
        return self.tls is TlsMode.IMPLICIT or (
            self.tls is TlsMode.AUTO and self.port == IMPLICIT_TLS_PORT
        )

    def helo_name(self) -> str:
        """The name sent in EHLO: ``helo``, else this host's FQDN (looked up once per call)."""
        return self.helo or socket.getfqdn()

    def tls_context(self) -> ssl.SSLContext:
        """``ssl_context``, else the default context (verifying unless ``verify`` is off)."""
        if self.ssl_context is not None:
            return self.ssl_context
        context = ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _check_relay(settings: SmtpSettings) -> None:
    if not settings.host:
        raise ConfigError(f"{_KEY}.host", "must not be empty")
    if not 0 < settings.port < 65536:
        raise ConfigError(f"{_KEY}.port", f"must be between 1 and 65535, got {settings.port}")
    if settings.password and not settings.username:
        raise ConfigError(f"{_KEY}.auth.username", "a password is set but the username is empty")
    auth_host, host = settings.auth_host, settings.host
    if auth_host and auth_host.lower().rstrip(".") != host.lower().rstrip("."):
        raise ConfigError(
            f"{_KEY}.auth.host",
            f"credentials are only for {auth_host!r}, but the server is {host!r}",
        )


def _check_numbers(settings: SmtpSettings) -> None:
    if settings.connections < 1:
        raise ConfigError(f"{_KEY}.connections", f"must be at least 1, got {settings.connections}")
    for key, value in (
        ("connect-timeout", settings.connect_timeout_s),
        ("command-timeout", settings.command_timeout_s),
        ("data-timeout", settings.data_timeout_s),
        ("idle-timeout", settings.idle_timeout_s),
        ("relay-retry-initial", settings.relay_retry_initial_s),
        ("relay-retry-max", settings.relay_retry_max_s),
    ):
        if not value > 0:
            raise ConfigError(f"{_KEY}.{key}", f"must be positive, got {value}")
