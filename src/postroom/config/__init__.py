"""Configuration: YAML files (keys from the seed), environment overrides, validated once.

Load with :func:`load_config`; every problem is a :class:`~postroom.errors.ConfigError` whose
message starts with the key path, e.g. ``email.server.max-time: "1x" is not a duration``.
The result is a tree of frozen dataclasses (:class:`Config` at the root) with Go-style
durations parsed into ``timedelta`` and passwords wrapped in :class:`Secret`.

Where values come from, highest first:

1. ``overrides=`` given to :func:`load_config` (dotted key paths),
2. environment variables ``POSTROOM_`` + key path upper-cased, dots as ``__`` and dashes as
   ``_`` (``POSTROOM_EMAIL__SERVER__MAX_FAILS=5``), parsed into the key's type,
3. the file: the path given, else ``$POSTROOM_CONFIG``, else ``./postroom.yaml``; ``${VAR}``
   in its strings is read from the environment (``${VAR:-fallback}`` allowed, ``$${`` writes a
   literal ``${``),
4. the defaults, which are also the embedded default: a SQLite queue and a SQLite database
   under ``./.postroom/``.

>>> config = load_config({"email": {"server": {"max-fails": 5}}}, env={})
>>> config.email.server.max_fails, config.email.queue["default"].engine
(5, 'sqlite')
"""

from __future__ import annotations

from postroom.errors import ConfigError
from postroom.transport.smtp.settings import TlsMode

from ._load import CONFIG_ENV, default_config, env_name, load_config, render_config
from ._model import (
    AuthConfig,
    Config,
    DatabaseConfig,
    DatabaseEngineName,
    EmailConfig,
    QueueConfig,
    QueueEngineName,
    RetryConfig,
    Secret,
    ServerConfig,
    SmtpConfig,
    WebConfig,
    redact_url,
    split_listen,
)

__all__ = [
    "CONFIG_ENV",
    "AuthConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "DatabaseEngineName",
    "EmailConfig",
    "QueueConfig",
    "QueueEngineName",
    "RetryConfig",
    "Secret",
    "ServerConfig",
    "SmtpConfig",
    "TlsMode",
    "WebConfig",
    "default_config",
    "env_name",
    "load_config",
    "redact_url",
    "render_config",
    "split_listen",
]
