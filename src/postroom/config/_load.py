"""Finding, reading and layering configuration; rendering it back as YAML.

Layers, highest first: ``overrides=`` (explicit arguments) > ``POSTROOM_EMAIL__...``
environment variables > the file (or mapping) > the defaults in the dataclasses. The file is
the one passed in, else ``$POSTROOM_CONFIG``, else ``./postroom.yaml``, else none (the embedded
default). Nothing here runs at import time.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml

from postroom.errors import ConfigError

from ._build import Text, build_config, hints, join, section_keys
from ._model import DEFAULT_QUEUE, Config, EmailConfig

CONFIG_ENV: str = "POSTROOM_CONFIG"
ENV_PREFIX: str = "POSTROOM_"
DEFAULT_FILE: str = "postroom.yaml"
EMBEDDED: str = "embedded default"

_VARIABLE = re.compile(r"\$(\$?)\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

ConfigSource = str | os.PathLike[str] | Mapping[str, object] | None


def load_config(
    source: ConfigSource = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Read, layer and validate a configuration; raise :class:`ConfigError` on any problem.

    ``source`` is a YAML file path, a mapping shaped like the YAML, or ``None`` to look for
    ``$POSTROOM_CONFIG``, then ``./postroom.yaml``, then use the embedded default. ``env``
    (default ``os.environ``) supplies ``${VAR}`` values in files and ``POSTROOM_EMAIL__...``
    overrides. ``overrides`` maps dotted key paths to values and wins over everything; string
    values are parsed like environment variables (``{"email.server.max-fails": "5"}``).

    >>> load_config({"email": {"server": {"max-time": "2h"}}}, env={}).email.server.max_time
    datetime.timedelta(seconds=7200)
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    raw, origin = _read_source(source, environ)
    _apply_env(raw, environ)
    for dotted, value in (overrides or {}).items():
        keys = dotted.split(".")
        _set(raw, keys, Text(value, "override") if isinstance(value, str) else value, dotted)
    return build_config(raw, origin)


def default_config() -> Config:
    """The embedded default: SQLite queue and SQLite database under ``./.postroom/``."""
    return Config(source=EMBEDDED)


def render_config(config: Config) -> str:
    """YAML text of ``config.redacted_dict()``, for ``postroom check-config``.

    Secrets show as ``********``, durations Go-style; the text loads again with ``load_config``.
    """
    return yaml.safe_dump(
        config.redacted_dict(), sort_keys=False, allow_unicode=True, default_flow_style=False
    )


# ---- the file layer -----------------------------------------------------------------------


def _read_source(source: ConfigSource, environ: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    if isinstance(source, Mapping):
        return _copy(source), "dict"
    if source is not None:
        return _read_file(Path(source), "", environ), os.fspath(source)
    named = environ.get(CONFIG_ENV, "")
    if named:
        return _read_file(
            Path(named), f" (named by ${CONFIG_ENV})", environ
        ), f"${CONFIG_ENV}={named}"
    local = Path.cwd() / DEFAULT_FILE
    if local.is_file():
        return _read_file(local, "", environ), str(local)
    return {}, EMBEDDED


def _copy(value: object) -> Any:
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    return value


def _read_file(path: Path, why: str, environ: Mapping[str, str]) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"{path}: no such config file{why}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError("", f"{path}: cannot read config file{why}: {exc.strerror}") from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"{path}{where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: expected a mapping with key email at the top")
    result: dict[str, Any] = _substitute(data, environ, "")
    return result


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _substitute(value: object, environ: Mapping[str, str], path: str) -> Any:
    """Replace ``${VAR}`` (or ``${VAR:-fallback}``) in every string; ``$${`` writes ``${``."""
    if isinstance(value, dict):
        return {
            key: _substitute(item, environ, join(path, str(key))) for key, item in value.items()
        }
    if not isinstance(value, str) or "${" not in value:
        return value
    used: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"
        name, has_fallback, fallback = match.group(2).partition(":-")
        if not _VAR_NAME.fullmatch(name):
            raise ConfigError(path, f"${{{match.group(2)}}} does not name an environment variable")
        used.append(f"${{{name}}}")
        if environ.get(name):
            return environ[name]
        if has_fallback:
            return fallback
        if name in environ:
            return ""
        raise ConfigError(path, f"${{{name}}} is not set in the environment")

    expanded = _VARIABLE.sub(replace, value)
    return Text(expanded, ", ".join(used)) if used else expanded


# ---- the environment layer ----------------------------------------------------------------


def env_name(key_path: str) -> str:
    """The environment variable that overrides ``key_path``.

    >>> env_name("email.server.max-fails")
    'POSTROOM_EMAIL__SERVER__MAX_FAILS'
    """
    return ENV_PREFIX + "__".join(part.upper().replace("-", "_") for part in key_path.split("."))


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name in sorted(environ):
        if name.upper().startswith(ENV_PREFIX + "EMAIL__"):
            keys = _env_keys(name, raw)
            _set(raw, keys, Text(environ[name], f"${name}"), f"${name}")


def _env_keys(name: str, raw: Mapping[str, Any]) -> list[str]:
    """The key path a ``POSTROOM_EMAIL__...`` variable names, checked against the schema."""
    segments = name[len(ENV_PREFIX) :].upper().split("__")[1:]
    keys: list[str] = ["email"]
    cls: type[Any] = EmailConfig
    node: Any = raw.get("email")
    while segments:
        fields = section_keys(cls)
        key = {k.upper().replace("-", "_"): k for k in fields}.get(segments.pop(0))
        if key is None:
            candidates = [env_name(join(".".join(keys), k)) for k in fields]
            close = difflib.get_close_matches(name.upper(), candidates, n=1, cutoff=0.6)
            hint = f" (did you mean ${close[0]}?)" if close else ""
            raise ConfigError(f"${name}", f"names no configuration key{hint}")
        keys.append(key)
        node = node.get(key) if isinstance(node, Mapping) else None
        hint_type = hints(cls)[fields[key].name]
        if isinstance(hint_type, type) and dataclasses.is_dataclass(hint_type):
            cls = hint_type
        elif get_origin(hint_type) is Mapping:
            if not segments:
                example = env_name(join(".".join(keys), f"{DEFAULT_QUEUE}.engine"))
                break
            keys.append(_queue_name(segments.pop(0), node))
            node = node.get(keys[-1]) if isinstance(node, Mapping) else None
            cls = get_args(hint_type)[1]
        elif segments:
            raise ConfigError(
                f"${name}", f"names no configuration key ({'.'.join(keys)} is a value)"
            )
        else:
            return keys
    else:
        example = env_name(join(".".join(keys), next(iter(section_keys(cls)))))
    section = ".".join(keys)
    raise ConfigError(f"${name}", f"names the section {section}; set a key, e.g. ${example}")


def _queue_name(segment: str, queues: object) -> str:
    """A queue named in the file whose variable form matches, else the lower-cased segment."""
    if isinstance(queues, Mapping):
        for existing in queues:
            if str(existing).upper().replace("-", "_") == segment:
                return str(existing)
    return segment.lower()


def _set(raw: dict[str, Any], keys: list[str], value: object, origin: str) -> None:
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise ConfigError(where, f"expected a mapping of keys (while applying {origin})")
        node = child
    node[keys[-1]] = value
