"""The typed configuration objects: what a configuration is once it has been validated.

YAML keys use dashes (``max-fails``), attributes use underscores (``max_fails``). Every object is
a frozen dataclass; the limits a loaded value must respect live in each field's metadata, where
the loader reads them. Secrets are :class:`Secret`, and passwords inside URLs are masked in every
``repr``, so printing or logging a configuration never shows a password.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Final, Literal, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from postroom.durations import format_duration
from postroom.errors import ConfigError

QueueEngineName = Literal["redis", "sqlite", "memory"]
DatabaseEngineName = Literal["sqlite3", "postgres"]

MASK: Final = "********"
DEFAULT_QUEUE: Final = "default"
POSTGRES_SCHEMES: Final = ("postgresql", "postgres", "postgresql+psycopg")
REDIS_SCHEMES: Final = ("redis", "rediss", "unix")

_V = TypeVar("_V")
_URL: Final[Mapping[str, object]] = {"url": True}
_PASSWORD_PARAM = re.compile(r"(^|&)(password=)[^&]*", re.IGNORECASE)


def _limits(
    *,
    at_least: float | timedelta | None = None,
    at_most: float | timedelta | None = None,
    above: float | timedelta | None = None,
) -> dict[str, object]:
    """Field metadata naming the allowed range; the loader refuses values outside it."""
    given = {"at_least": at_least, "at_most": at_most, "above": above}
    return {key: value for key, value in given.items() if value is not None}


class Secret:
    """A string that never shows itself: ``repr()`` and ``str()`` give ``********``.

    ``==`` compares the hidden values; ``bool()`` is false for an empty secret.

    >>> password = Secret("hunter2")
    >>> password, f"{password}", password.reveal()
    (********, '********', 'hunter2')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        if not isinstance(value, str):
            raise TypeError(f"a Secret wraps a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The hidden value, for the one place that must use it (a login, a connection)."""
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


def redact_url(url: str) -> str:
    """``url`` with its password (and any ``password=`` query parameter) shown as ``********``.

    >>> redact_url("redis://:s3cret@cache:6379/0")
    'redis://:********@cache:6379/0'
    """
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return MASK
    netloc = parts.netloc
    if has_password:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}"
    query = _PASSWORD_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def url_with_password(url: str, password: str) -> str:
    """``url`` with ``password`` added to its user info, unless the URL already has one."""
    parts = urlsplit(url)
    if not password or parts.password is not None:
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo if at else ''}:{quote(password, safe='')}@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


class FrozenMap(Mapping[str, _V]):
    """A read-only, picklable mapping (``MappingProxyType`` cannot be pickled)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, _V] | None = None) -> None:
        self._items: dict[str, _V] = dict(items or {})

    def __getitem__(self, key: str) -> _V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return repr(self._items)


class _Section:
    """Common behaviour of the configuration objects: a ``repr`` that hides secrets."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("url") and isinstance(value, str):
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def to_plain(value: object, *, is_url: bool = False) -> object:
    """Configuration as plain YAML-ready data: dashed keys, Go-style durations, secrets masked.

    An empty secret is shown as ``""`` (so "not set" stays visible), any other as ``********``.
    """
    if isinstance(value, _Section):
        return {
            f.name.replace("_", "-"): to_plain(getattr(value, f.name), is_url="url" in f.metadata)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, Secret):
        return MASK if value else ""
    if isinstance(value, timedelta):
        return format_duration(value)
    if is_url and isinstance(value, str):
        return redact_url(value)
    return value


@dataclass(frozen=True, slots=True, repr=False)
class QueueConfig(_Section):
    """One queue, key ``email.queue.<name>``: where application processes hand emails over.

    ``engine`` picks the implementation; ``host``/``port``/``db``/``password`` (or ``url``) are
    read by ``redis``, ``path`` by ``sqlite``; ``name`` is the Redis key / stream name or the
    SQLite table name prefix.
    """

    engine: QueueEngineName = "sqlite"
    host: str = "127.0.0.1"
    port: int = field(default=6379, metadata=_limits(at_least=1, at_most=65535))
    db: int = field(default=0, metadata=_limits(at_least=0))
    name: str = "postroom"
    url: str | None = field(default=None, metadata=_URL)
    password: Secret = field(default_factory=Secret)
    path: str = "./.postroom/queue.db"
    redeliver_after: timedelta = field(
        default=timedelta(minutes=5), metadata=_limits(above=timedelta(0))
    )

    def redis_url(self) -> str:
        """The Redis URL to connect to, password included: keep it out of logs.

        ``url`` when set (with ``password`` added if the URL carries none), else
        ``redis://[:password@]host:port/db``.
        """
        password = self.password.reveal()
        if self.url is not None:
            return url_with_password(self.url, password)
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        userinfo = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{userinfo}{host}:{self.port}/{self.db}"


@dataclass(frozen=True, slots=True, repr=False)
class RetryConfig(_Section):
    """Backoff between delivery attempts, key ``email.server.retry``.

    The first retry waits ``initial``, each later one ``multiplier`` times longer, never more
    than ``max``; ``jitter`` (a fraction, 0..1) spreads each wait randomly by that much.
    """

    initial: timedelta = field(default=timedelta(seconds=30), metadata=_limits(above=timedelta(0)))
    max: timedelta = field(default=timedelta(minutes=30), metadata=_limits(above=timedelta(0)))
    multiplier: float = field(default=2.0, metadata=_limits(at_least=1.0, at_most=100.0))
    jitter: float = field(default=0.2, metadata=_limits(at_least=0.0, at_most=1.0))


@dataclass(frozen=True, slots=True, repr=False)
class DatabaseConfig(_Section):
    """The dispatcher's database, key ``email.server.database``."""

    engine: DatabaseEngineName = "sqlite3"
    path: str = "./.postroom/postroom.db"
    url: str | None = field(default=None, metadata=_URL)

    def sqlalchemy_url(self) -> str:
        """The SQLAlchemy URL, password included: keep it out of logs.

        ``sqlite:///<path>`` for sqlite3 (or ``url`` when set); for postgres ``url`` with its
        scheme normalised to ``postgresql+psycopg://``.
        """
        if self.engine == "sqlite3":
            return self.url if self.url else f"sqlite:///{self.path}"
        if not self.url:
            raise ConfigError("email.server.database.url", "is required for engine postgres")
        return "postgresql+psycopg://" + self.url.partition("://")[2]


@dataclass(frozen=True, slots=True, repr=False)
class AuthConfig(_Section):
    """SMTP login, key ``email.server.smtp.auth`` (as Go's ``smtp.PlainAuth``).

    ``host``, when set, must equal ``email.server.smtp.host``: credentials go to no other host.
    """

    identity: str = ""
    username: str = ""
    password: Secret = field(default_factory=Secret)
    host: str = ""


@dataclass(frozen=True, slots=True, repr=False)
class SmtpConfig(_Section):
    """The SMTP relay the dispatcher delivers through, key ``email.server.smtp``.

    ``tls``: ``auto`` is implicit TLS on port 465, else STARTTLS when the server offers it
    (required when ``auth`` is set); ``starttls`` and ``implicit`` insist; ``none`` never encrypts.
    """

    host: str = "localhost"
    port: int = field(default=25, metadata=_limits(at_least=1, at_most=65535))
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: Literal["auto", "starttls", "implicit", "none"] = "auto"  # the values of TlsMode
    verify: bool = True
    connections: int = field(default=4, metadata=_limits(at_least=1, at_most=1000))
    connect_timeout: timedelta = field(
        default=timedelta(seconds=30), metadata=_limits(above=timedelta(0))
    )
    command_timeout: timedelta = field(
        default=timedelta(minutes=5), metadata=_limits(above=timedelta(0))
    )
    data_timeout: timedelta = field(
        default=timedelta(minutes=10), metadata=_limits(above=timedelta(0))
    )
    idle_timeout: timedelta = field(
        default=timedelta(seconds=60), metadata=_limits(above=timedelta(0))
    )
    helo: str | None = None


@dataclass(frozen=True, slots=True, repr=False)
class ServerConfig(_Section):
    """The dispatcher (``postroom serve``), key ``email.server``."""

    max_fails: int = field(default=3, metadata=_limits(at_least=1))
    max_time: timedelta = field(default=timedelta(hours=1), metadata=_limits(above=timedelta(0)))
    batch: int = field(default=50, metadata=_limits(at_least=1, at_most=10_000))
    lease: timedelta = field(default=timedelta(minutes=15), metadata=_limits(above=timedelta(0)))
    retry: RetryConfig = field(default_factory=RetryConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    dispatcher_id: str | None = None
    processes: int = field(default=1, metadata=_limits(at_least=1, at_most=64))


def _default_queues() -> Mapping[str, QueueConfig]:
    return FrozenMap({DEFAULT_QUEUE: QueueConfig()})


@dataclass(frozen=True, slots=True, repr=False)
class EmailConfig(_Section):
    """Everything under the ``email`` key: the client side and the server side."""

    buffer: int = field(default=250, metadata=_limits(at_least=1))
    enqueue_timeout: timedelta = field(
        default=timedelta(seconds=5), metadata=_limits(at_least=timedelta(0))
    )
    flush_timeout: timedelta = field(
        default=timedelta(seconds=10), metadata=_limits(at_least=timedelta(0))
    )
    queue: Mapping[str, QueueConfig] = field(default_factory=_default_queues)
    server: ServerConfig = field(default_factory=ServerConfig)


@dataclass(frozen=True, slots=True, repr=False)
class Config(_Section):
    """A whole, validated configuration; ``source`` says where it came from.

    ``source`` is a file path, ``"$POSTROOM_CONFIG=<path>"``, ``"dict"`` or
    ``"embedded default"``; it does not take part in ``==``.
    """

    email: EmailConfig = field(default_factory=EmailConfig)
    source: str = field(default="embedded default", compare=False)

    def redacted_dict(self) -> dict[str, object]:
        """The effective configuration as plain data, secrets shown as ``********``.

        Durations are Go-style strings, so the result loads again with ``load_config``.
        """
        return {"email": to_plain(self.email)}
