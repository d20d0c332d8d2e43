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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Final, Literal, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from postroom.durations import format_duration
from postroom.errors import ConfigError

QueueEngineName = Literal["redis", "sqlite", "memory"]
DatabaseEngineName = Literal["sqlite3", "postgres"]

MASK: Final = "********"
#: default ``email.max-message-size``: 25 MiB of rendered message (what large providers accept)
MAX_MESSAGE_SIZE: Final = 25 * 1024 * 1024
#: default ``email.max-recipients``: envelope recipients of one message, Bcc included
MAX_RECIPIENTS: Final = 1000
DEFAULT_QUEUE: Final = "default"
POSTGRES_SCHEMES: Final = ("postgresql", "postgres", "postgresql+psycopg")
REDIS_SCHEMES: Final = ("redis", "rediss", "unix")

_V = TypeVar("_V")
_URL: Final[Mapping[str, object]] = {"url": True}
# ``password=``, ``sslpassword=``, ...: a query parameter that holds a secret, in any URL
_PASSWORD_PARAM = re.compile(r"([?&;][A-Za-z_]*password=)[^&;#\s'\"]*", re.IGNORECASE)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


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


def redact_url(text: str, *, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret a URL may hold shown as ``********``: the password of the user
    info, any ``...password=`` query parameter, and each string of ``secrets``.

    This is the one place postroom hides passwords; every URL shown in an error, a log line, a
    ``repr`` or ``check-config`` goes through it. It does not need the URL to parse: the user
    info runs from ``://`` (or the start, without a scheme) to the *last* ``@``, so a password
    holding an unencoded ``@``, ``/``, ``?`` or ``#`` is hidden whole. When in doubt it hides
    too much rather than too little. ``text`` may also be a message holding a URL.

    >>> redact_url("redis://:s3cret@cache:6379/0")
    'redis://:********@cache:6379/0'
    >>> redact_url("postgresql://u:pa/ss#Word9@db:5432/app")
    'postgresql://u:********@db:5432/app'
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _PASSWORD_PARAM.sub(lambda m: m.group(1) + MASK, text)
    scheme = _SCHEME.search(text)
    start = 0 if scheme is None else scheme.end()  # no scheme: maybe ``user:password@host``
    return text[:start] + _mask_userinfo(text[start:])


def _mask_userinfo(rest: str) -> str:
    """``user:password@host...`` -> ``user:********@host...``; the password ends at the last @."""
    userinfo, at, after = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not at or not colon or any(char in user for char in "/?#"):
        return rest  # no password: the ``@`` and ``:`` belong to the path or the query
    return f"{user}:{MASK}@{after}"


def ambiguous_userinfo(url: str) -> bool:
    """Whether a URL's user info holds an unencoded ``@``, ``/``, ``?`` or ``#``: parsers then
    disagree on where the password ends, and a resolver may be handed part of it as a host."""
    userinfo = url.partition("://")[2].rpartition("@")[0]
    user = userinfo.partition(":")[0]
    if user and any(char in user for char in "/?#"):
        return False  # the ``@`` comes after the host: not user info
    return any(char in userinfo for char in "@/?#")


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
        _require_psycopg()
        return "postgresql+psycopg://" + self.url.partition("://")[2]


def _require_psycopg() -> None:
    """Refuse engine postgres without its driver, with the command that installs it."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "email.server.database.engine",
            "engine postgres needs the 'psycopg' package: pip install 'postroom[postgres]'",
        ) from exc


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
    (required when ``auth`` is set); ``starttls`` and ``implicit`` insist; ``none`` never encrypts,
    and is refused together with a password unless ``allow_plaintext_password`` is true.
    ``helo`` (default: this machine's name) must be a host name or an address literal
    (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``).
    """

    host: str = "localhost"
    port: int = field(default=25, metadata=_limits(at_least=1, at_most=65535))
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: Literal["auto", "starttls", "implicit", "none"] = "auto"  # the values of TlsMode
    verify: bool = True
    connections: int = field(default=16, metadata=_limits(at_least=1, at_most=1000))
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
    allow_plaintext_password: bool = False


@dataclass(frozen=True, slots=True, repr=False)
class ServerConfig(_Section):
    """The dispatcher (``postroom serve``), key ``email.server``."""

    max_fails: int = field(default=3, metadata=_limits(at_least=1))
    max_time: timedelta = field(default=timedelta(hours=1), metadata=_limits(above=timedelta(0)))
    batch: int = field(default=50, metadata=_limits(at_least=1, at_most=10_000))
    lease: timedelta = field(default=timedelta(seconds=60), metadata=_limits(above=timedelta(0)))
    heartbeat: timedelta = field(
        default=timedelta(seconds=2), metadata=_limits(at_least=timedelta(milliseconds=100))
    )
    retry: RetryConfig = field(default_factory=RetryConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    dispatcher_id: str | None = None
    processes: int = field(default=1, metadata=_limits(at_least=1, at_most=64))


#: default ``email.web.listen``: loopback only, where no token is needed
WEB_LISTEN: Final = "127.0.0.1:8025"
#: shortest ``email.web.token`` accepted: a guessable token protects nothing
WEB_TOKEN_MIN_LENGTH: Final = 16


def split_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:8025"`` for IPv6) -> ``(host, port)``; ``ValueError`` says why."""
    host, colon, port_text = listen.strip().rpartition(":")
    if not colon or not host or (not port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"{listen!r} is not host:port (e.g. 127.0.0.1:8025)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{listen!r}: write an IPv6 address in brackets ([::1]:8025)")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"{listen!r}: the port must be 0-65535")
    return host, port


@dataclass(frozen=True, slots=True, repr=False)
class WebConfig(_Section):
    """The dashboard (``postroom web``), key ``email.web``.

    ``listen`` is ``host:port`` (``[::1]:8025`` for IPv6). On any address other than a loopback
    one, ``token`` is required, and every request must carry it.
    """

    listen: str = WEB_LISTEN
    token: Secret = field(default_factory=Secret)


def _default_queues() -> Mapping[str, QueueConfig]:
    return FrozenMap({DEFAULT_QUEUE: QueueConfig()})


@dataclass(frozen=True, slots=True, repr=False)
class EmailConfig(_Section):
    """Everything under the ``email`` key: the client side and the server side.

    ``max_message_size`` (bytes of the rendered message) and ``max_recipients`` (envelope
    recipients, Bcc included) are checked by ``enqueue()``.
    """

    buffer: int = field(default=250, metadata=_limits(at_least=1))
    enqueue_timeout: timedelta = field(
        default=timedelta(seconds=5), metadata=_limits(at_least=timedelta(0))
    )
    flush_timeout: timedelta = field(
        default=timedelta(seconds=10), metadata=_limits(at_least=timedelta(0))
    )
    max_message_size: int = field(
        default=MAX_MESSAGE_SIZE, metadata=_limits(at_least=1024, at_most=2**31 - 1)
    )
    max_recipients: int = field(default=MAX_RECIPIENTS, metadata=_limits(at_least=1))
    queue: Mapping[str, QueueConfig] = field(default_factory=_default_queues)
    server: ServerConfig = field(default_factory=ServerConfig)
    web: WebConfig = field(default_factory=WebConfig)


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
