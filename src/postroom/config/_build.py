"""From plain data (parsed YAML, overrides) to typed configuration, validated in one pass.

The dataclasses in :mod:`._model` are the schema: their fields name the keys, their type hints
the types and their metadata the limits. Every refusal is a :class:`ConfigError` whose message
starts with the key path. Values typed as text (environment variables, ``${VAR}`` substitutions,
string overrides) arrive as :class:`Text` and are parsed into the field's type; values from YAML
must already have it (``port: "25"`` is refused, ``port: ${SMTP_PORT}`` is parsed).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from postroom.durations import (
    MAX_DURATION,
    DurationTooLongError,
    format_duration,
    parse_duration,
)
from postroom.errors import ConfigError

from ._model import (
    DEFAULT_QUEUE,
    POSTGRES_SCHEMES,
    REDIS_SCHEMES,
    WEB_TOKEN_MIN_LENGTH,
    Config,
    DatabaseConfig,
    EmailConfig,
    FrozenMap,
    QueueConfig,
    RetryConfig,
    Secret,
    ServerConfig,
    SmtpConfig,
    WebConfig,
    ambiguous_userinfo,
    redact_url,
    split_listen,
)

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_SQL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"\s*[+-]?\d+\s*")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_YEARS = MAX_DURATION.days // 365
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class Text(str):
    """A string typed as text, to be parsed into its field's type; ``origin`` names its source."""

    origin: str

    def __new__(cls, value: str, origin: str) -> Text:
        self = super().__new__(cls, value)
        self.origin = origin
        return self


def join(path: str, key: str) -> str:
    """The key path of ``key`` inside ``path``."""
    return f"{path}.{key}" if path else key


def section_keys(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    """YAML key (dashed) -> dataclass field, in declaration order."""
    return {f.name.replace("_", "-"): f for f in dataclasses.fields(cls)}


_HINTS: dict[type[Any], dict[str, Any]] = {}


def hints(cls: type[Any]) -> dict[str, Any]:
    """Resolved type hints of a configuration class (resolved on first use, then kept)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def is_section(hint: object) -> bool:
    """Whether a field holds a nested section (a dataclass or a mapping of named ones)."""
    return dataclasses.is_dataclass(hint) or get_origin(hint) is Mapping


def build_config(raw: object, source: str) -> Config:
    """Validate ``raw`` (the merged plain data) into a :class:`Config`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            "", f"the configuration must be a mapping with key email, not {_kind(raw)}"
        )
    for key in raw:
        if key != "email":
            hint = f"email.{key}" if key in section_keys(EmailConfig) else "email"
            raise ConfigError(_key_str(key), f"unknown key (did you mean {hint}?)")
    return Config(email=_section(EmailConfig, raw.get("email"), "email"), source=source)


def _section(cls: type[Any], raw: object, path: str) -> Any:
    data = _mapping(raw, path)
    fields = section_keys(cls)
    for key in data:
        if key not in fields:
            raise _unknown_key(key, fields, path)
    kwargs: dict[str, object] = {}
    for key, f in fields.items():
        hint = hints(cls)[f.name]
        if key in data and not (data[key] is None and is_section(hint)):
            kwargs[f.name] = _value(hint, data[key], join(path, key), f.metadata)
    obj = cls(**kwargs)
    check = _CHECKS.get(cls)
    return check(obj, data, path) if check else obj


def _mapping(raw: object, path: str) -> Mapping[str, object]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(path, f"expected a mapping of keys, got {_describe(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise ConfigError(join(path, str(key)), "keys must be strings")
    return raw


def _unknown_key(key: object, fields: Iterable[str], path: str) -> ConfigError:
    name = _key_str(key)
    close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
    hint = f" (did you mean {join(path, close[0])}?)" if close else ""
    return ConfigError(join(path, name), f"unknown key{hint}")


def _key_str(key: object) -> str:
    return key if isinstance(key, str) else repr(key)


def _value(hint: Any, value: object, path: str, meta: Mapping[str, object]) -> object:
    if dataclasses.is_dataclass(hint):
        return _section(typing.cast(type[Any], hint), value, path)
    if get_origin(hint) is Mapping:
        return _named_sections(get_args(hint)[1], value, path)
    if get_origin(hint) is Literal:
        return _choice(get_args(hint), value, path)
    if isinstance(hint, types.UnionType):  # ``str | None``
        if value is None or (isinstance(value, Text) and not value.strip()):
            return None
        return _as_str(value, path, meta)
    result = _SCALARS[hint](value, path, meta)
    _check_limits(result, meta, path)
    return result


def _named_sections(cls: type[Any], raw: object, path: str) -> Mapping[str, object]:
    items = {}
    for name, item in _mapping(raw, path).items():
        if not _NAME.fullmatch(name):
            raise ConfigError(join(path, name), "a name may use only letters, digits, - and _")
        items[name] = _section(cls, item, join(path, name))
    return FrozenMap(items)


def _choice(options: tuple[str, ...], value: object, path: str) -> str:
    if isinstance(value, str) and value in options:
        return str(value)
    close = difflib.get_close_matches(str(value), options, n=1) if isinstance(value, str) else []
    hint = f"; did you mean {close[0]}?" if close else ""
    shown = _show(value) if isinstance(value, str) else _describe(value)
    raise ConfigError(path, f"{shown} is not one of {', '.join(options)}{hint}")


# ---- scalars ------------------------------------------------------------------------------


def _as_int(value: object, path: str, meta: Mapping[str, object]) -> int:
    if isinstance(value, Text):
        if _INT.fullmatch(value):
            return int(value)
        raise ConfigError(path, f"{_show(value)} is not an integer{_from(value)}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected an integer, got {_describe(value)}")
    return value


def _as_float(value: object, path: str, meta: Mapping[str, object]) -> float:
    if isinstance(value, Text):
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(path, f"{_show(value)} is not a number{_from(value)}") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(path, f"expected a number, got {_describe(value)}")
    else:
        number = float(value)
    if not math.isfinite(number):
        raise ConfigError(path, f"{number} is not a finite number")
    return number


def _as_bool(value: object, path: str, meta: Mapping[str, object]) -> bool:
    if isinstance(value, Text):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ConfigError(path, f"{_show(value)} is not true or false{_from(value)}")
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {_describe(value)}")
    return value


def _as_str(value: object, path: str, meta: Mapping[str, object]) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {_describe(value)}; quote it")
    if meta.get("url"):
        return str(value).strip()
    return str(value)


def _as_secret(value: object, path: str, meta: Mapping[str, object]) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {_kind(value)}; quote it")
    return Secret(str(value))


def _as_duration(value: object, path: str, meta: Mapping[str, object]) -> timedelta:
    if isinstance(value, timedelta):
        if abs(value) > MAX_DURATION:
            raise ConfigError(path, f"{_fmt(value)} is longer than {_YEARS} years")
        return value
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except DurationTooLongError:
            problem = f"{_show(value)} is longer than {_YEARS} years{_from(value)}"
            raise ConfigError(path, problem) from None
        except ValueError:
            problem = f"{_show(value)} is not a duration (e.g. 300ms, 5m, 1h30m){_from(value)}"
            raise ConfigError(path, problem) from None
    if isinstance(value, int) and not isinstance(value, bool):
        if value == 0:
            return timedelta(0)
        raise ConfigError(path, f'{value} is not a duration: add a unit, e.g. "{value}s"')
    raise ConfigError(path, f"expected a duration such as 5m, got {_describe(value)}")


_SCALARS: dict[object, Callable[[object, str, Mapping[str, object]], object]] = {
    int: _as_int,
    float: _as_float,
    bool: _as_bool,
    str: _as_str,
    Secret: _as_secret,
    timedelta: _as_duration,
}


def _check_limits(value: Any, meta: Mapping[str, Any], path: str) -> None:
    low, high, above = meta.get("at_least"), meta.get("at_most"), meta.get("above")
    too_low = low is not None and value < low
    too_high = high is not None and value > high
    not_above = above is not None and value <= above
    if not (too_low or too_high or not_above):
        return
    if above is not None:
        rule = f"must be more than {_fmt(above)}"
    elif low is not None and high is not None:
        rule = f"must be between {_fmt(low)} and {_fmt(high)}"
    elif low is not None:
        rule = f"must be at least {_fmt(low)}"
    else:
        rule = f"must be at most {_fmt(high)}"
    raise ConfigError(path, f"{_fmt(value)} is out of range ({rule})")


def _fmt(value: object) -> str:
    return format_duration(value) if isinstance(value, timedelta) else str(value)


def _show(value: str) -> str:
    return json.dumps(str(value), ensure_ascii=False)


def _from(value: object) -> str:
    return f" (from {value.origin})" if isinstance(value, Text) else ""


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int | float):
        return f"{value} (a number)"
    if isinstance(value, str):
        return f"{_show(value)} (a string)"
    return _kind(value)


# ---- checks across fields -----------------------------------------------------------------


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else ""


def _check_queue(queue: QueueConfig, data: Mapping[str, object], path: str) -> QueueConfig:
    if queue.url is not None:
        if _scheme(queue.url) not in REDIS_SCHEMES:
            problem = "is not a Redis URL (redis://, rediss:// or unix://)"
            raise ConfigError(join(path, "url"), f"{_show(redact_url(queue.url))} {problem}")
        _check_port(queue.url, join(path, "url"))
        if "engine" not in data:
            queue = dataclasses.replace(queue, engine="redis")
        elif queue.engine != "redis":
            raise ConfigError(
                join(path, "url"), f"is only read by engine redis, not {queue.engine}"
            )
    if not queue.name.strip():
        raise ConfigError(join(path, "name"), "must not be empty")
    if queue.engine == "sqlite" and not _SQL_NAME.fullmatch(queue.name):
        problem = "is not a table name for engine sqlite (letters, digits and _)"
        raise ConfigError(join(path, "name"), f"{_show(queue.name)} {problem}")
    if queue.engine == "sqlite" and not queue.path.strip():
        raise ConfigError(join(path, "path"), "must not be empty for engine sqlite")
    if queue.engine == "redis" and queue.url is None and not queue.host.strip():
        raise ConfigError(join(path, "host"), "must not be empty for engine redis")
    return queue


def _check_database(db: DatabaseConfig, data: Mapping[str, object], path: str) -> DatabaseConfig:
    url_path = join(path, "url")
    if db.url is None:
        if db.engine == "postgres":
            example = "e.g. postgresql://user:password@host:5432/dbname"
            raise ConfigError(url_path, f"is required for engine postgres ({example})")
        if not db.path.strip():
            raise ConfigError(join(path, "path"), "must not be empty for engine sqlite3")
        return db
    scheme = _scheme(db.url)
    kind = "postgres" if scheme in POSTGRES_SCHEMES else "sqlite3" if scheme == "sqlite" else ""
    if not kind:
        accepted = "postgresql://, postgres://, postgresql+psycopg:// or sqlite:///path"
        raise ConfigError(url_path, f"{_show(redact_url(db.url))} is not one of {accepted}")
    _check_port(db.url, url_path)
    if "engine" in data and db.engine != kind:
        raise ConfigError(url_path, f"is a {kind} URL but engine is {db.engine}")
    if kind == "postgres":
        return dataclasses.replace(db, engine="postgres")
    file_path = _sqlite_file(db.url, url_path)
    if "path" in data and db.path != file_path:
        raise ConfigError(url_path, f"names {_show(file_path)} but path is {_show(db.path)}")
    return dataclasses.replace(db, engine="sqlite3", path=file_path)


def _sqlite_file(url: str, path: str) -> str:
    rest = url.partition("://")[2].partition("?")[0]
    if rest in ("", "/"):
        return ":memory:"
    if not rest.startswith("/"):
        raise ConfigError(
            path,
            f"{_show(redact_url(url))} is not sqlite:///relative/path or sqlite:////abs/path",
        )
    return rest[1:]


def _check_port(url: str, path: str) -> None:
    """Refuse a URL whose password or port parsers would read differently, naming the key."""
    if ambiguous_userinfo(url):
        raise ConfigError(
            path,
            f"{_show(redact_url(url))} is ambiguous: write '@', '/', '?' and '#' in the user "
            "name and password percent-encoded (%40, %2F, %3F, %23)",
        )
    try:
        urlsplit(url).port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ConfigError(path, f"{_show(redact_url(url))} has a bad port") from None


def _check_retry(retry: RetryConfig, data: Mapping[str, object], path: str) -> RetryConfig:
    if retry.max < retry.initial:
        shown = f"{format_duration(retry.max)} is less than {join(path, 'initial')}"
        raise ConfigError(join(path, "max"), f"{shown} ({format_duration(retry.initial)})")
    return retry


def _check_smtp(smtp: SmtpConfig, data: Mapping[str, object], path: str) -> SmtpConfig:
    auth, auth_path = smtp.auth, join(path, "auth")
    if auth.host and auth.host.lower() != smtp.host.lower():
        problem = f"{_show(auth.host)} differs from {join(path, 'host')} ({_show(smtp.host)})"
        raise ConfigError(join(auth_path, "host"), f"{problem}; credentials go to no other host")
    if bool(auth.username) != bool(auth.password):
        missing = "password" if auth.username else "username"
        raise ConfigError(join(auth_path, missing), "is required when the other one is set")
    if smtp.tls == "none" and auth.password and not smtp.allow_plaintext_password:
        raise ConfigError(
            join(path, "tls"),
            f"is none while {join(auth_path, 'password')} is set: the password would cross the "
            f"network in clear; use starttls or implicit, or set "
            f"{join(path, 'allow-plaintext-password')}: true",
        )
    if smtp.helo is not None and not _is_helo_name(smtp.helo):
        raise ConfigError(
            join(path, "helo"),
            f"{_show(smtp.helo)} is neither a host name (mail.example.com) nor an address "
            "literal ([192.0.2.1], [IPv6:2001:db8::1])",
        )
    return smtp


def _check_server(server: ServerConfig, data: Mapping[str, object], path: str) -> ServerConfig:
    if server.lease < 5 * server.heartbeat:
        shown = f"{format_duration(server.lease)} is less than 5 heartbeats"
        every = f"{join(path, 'heartbeat')} is {format_duration(server.heartbeat)}"
        raise ConfigError(join(path, "lease"), f"{shown} ({every})")
    return server


def _is_helo_name(name: str) -> bool:
    """A domain (RFC 5321 ``Domain``) or an address literal (``[192.0.2.1]``, ``[IPv6:...]``)."""
    if name.startswith("[") and name.endswith("]"):
        literal = name[1:-1]
        version, text = (6, literal[5:]) if literal[:5].lower() == "ipv6:" else (4, literal)
        try:
            return ipaddress.ip_address(text).version == version
        except ValueError:
            return False
    labels = name.split(".")
    return len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def _check_email(email: EmailConfig, data: Mapping[str, object], path: str) -> EmailConfig:
    if DEFAULT_QUEUE not in email.queue:
        names = ", ".join(email.queue) or "none"
        problem = f'a queue named "{DEFAULT_QUEUE}" is required (found: {names})'
        raise ConfigError(join(path, "queue"), problem)
    return email


def _check_web(web: WebConfig, data: Mapping[str, object], path: str) -> WebConfig:
    try:
        split_listen(web.listen)
    except ValueError as exc:
        raise ConfigError(join(path, "listen"), str(exc)) from None
    if web.token and len(web.token.reveal()) < WEB_TOKEN_MIN_LENGTH:
        problem = f"must be at least {WEB_TOKEN_MIN_LENGTH} characters (or empty)"
        raise ConfigError(join(path, "token"), problem)
    return web


_CHECKS: dict[type[Any], Callable[[Any, Mapping[str, object], str], Any]] = {
    QueueConfig: _check_queue,
    DatabaseConfig: _check_database,
    RetryConfig: _check_retry,
    SmtpConfig: _check_smtp,
    ServerConfig: _check_server,
    EmailConfig: _check_email,
    WebConfig: _check_web,
}
