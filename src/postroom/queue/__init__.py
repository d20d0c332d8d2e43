"""Queue engines, chosen by name from the configuration.

``open_queue(config.email.queue["default"])`` returns a ready engine. The engine modules are
imported on first use only, so an application that uses SQLite never imports redis-py, and a
missing optional dependency is reported as a :class:`~postroom.errors.ConfigError` with the
command that installs it.

===========  ==========================================  ======================================
engine       class                                       needs
===========  ==========================================  ======================================
``sqlite``   :class:`postroom.queue.sqlite.SqliteQueue`  nothing (the embedded default)
``redis``    :class:`postroom.queue.redis.RedisQueue`    ``pip install 'postroom[redis]'``
``memory``   :class:`postroom.queue.memory.MemoryQueue`  nothing; one queue per name per process
===========  ==========================================  ======================================
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

from postroom.errors import ConfigError
from postroom.queue.base import QueueEngine, Taken

if TYPE_CHECKING:
    from postroom.config import QueueConfig
    from postroom.queue.memory import MemoryQueue

__all__ = ["ENGINES", "QueueEngine", "Taken", "engine_class", "open_queue"]

#: engine name -> (module, class name); modules are imported on first use
_REGISTRY: dict[str, tuple[str, str]] = {
    "memory": ("postroom.queue.memory", "MemoryQueue"),
    "redis": ("postroom.queue.redis", "RedisQueue"),
    "sqlite": ("postroom.queue.sqlite", "SqliteQueue"),
}
_INSTALL_HINTS: dict[str, tuple[str, str]] = {
    # engine -> (top-level module it needs, extra to install)
    "redis": ("redis", "redis"),
}

#: every engine name the configuration accepts, sorted
ENGINES: tuple[str, ...] = tuple(sorted(_REGISTRY))

# Memory queues are shared by name inside one process, so an application's outbox and an
# in-process dispatcher configured alike see the same queue.
_memory_lock = threading.Lock()
_memory_queues: dict[str, MemoryQueue] = {}


def engine_class(name: str, *, key_path: str = "email.queue.default") -> type[QueueEngine]:
    """The engine class registered as ``name``, importing its module now.

    Raises :class:`ConfigError` naming ``<key_path>.engine`` for an unknown name, or when the
    engine's optional dependency is not installed (with the ``pip install`` command to fix it).
    """
    try:
        module_name, class_name = _REGISTRY[name]
    except KeyError:
        known = ", ".join(ENGINES)
        raise ConfigError(
            f"{key_path}.engine", f"unknown queue engine {name!r} (expected one of: {known})"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        needed, extra = _INSTALL_HINTS.get(name, ("", ""))
        if not needed or exc.name is None or exc.name.split(".")[0] != needed:
            raise
        raise ConfigError(
            f"{key_path}.engine",
            f"queue engine {name!r} needs the {needed!r} package: pip install 'postroom[{extra}]'",
        ) from exc
    cls: type[QueueEngine] = getattr(module, class_name)
    return cls


def open_queue(cfg: QueueConfig, *, key_path: str = "email.queue.default") -> QueueEngine:
    """Open the engine that ``cfg`` describes.

    Opening may create a SQLite file; a Redis engine connects on its first command. The caller
    owns the engine and closes it (closing a shared memory queue is harmless).

    >>> from postroom.config import default_config
    >>> engine = open_queue(default_config().email.queue["default"])  # doctest: +SKIP
    """
    engine_class(cfg.engine, key_path=key_path)  # refuses unknown names and missing packages
    redeliver_after_s = cfg.redeliver_after.total_seconds()
    if cfg.engine == "memory":
        return _shared_memory_queue(cfg.name, redeliver_after_s)
    if cfg.engine == "redis":
        from postroom.queue.redis import RedisQueue

        return RedisQueue(cfg.redis_url(), name=cfg.name, redeliver_after_s=redeliver_after_s)
    from postroom.queue.sqlite import SqliteQueue

    return SqliteQueue(cfg.path, name=cfg.name, redeliver_after_s=redeliver_after_s)


def _shared_memory_queue(name: str, redeliver_after_s: float) -> QueueEngine:
    from postroom.queue.memory import MemoryQueue

    with _memory_lock:
        queue = _memory_queues.get(name)
        if queue is None:
            queue = _memory_queues[name] = MemoryQueue(redeliver_after_s=redeliver_after_s)
        return queue
