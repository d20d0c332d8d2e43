"""Choosing a queue engine from configuration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from postroom.config import QueueConfig, load_config
from postroom.errors import ConfigError
from postroom.queue import ENGINES, engine_class, open_queue
from postroom.queue.memory import MemoryQueue


def test_engine_names() -> None:
    assert ENGINES == ("memory", "redis", "sqlite")


def test_memory_queues_are_shared_by_name_within_the_process() -> None:
    def cfg(name: str) -> QueueConfig:
        config = load_config({"email": {"queue": {"default": {"engine": "memory", "name": name}}}})
        return config.email.queue["default"]

    first = open_queue(cfg("registry-a"))
    again = open_queue(cfg("registry-a"))
    other = open_queue(cfg("registry-b"))
    assert isinstance(first, MemoryQueue)
    assert first is again
    assert first is not other


def test_sqlite_engine_opens_the_configured_file(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    config = load_config(
        {"email": {"queue": {"default": {"engine": "sqlite", "path": str(path), "name": "mail"}}}}
    )
    with open_queue(config.email.queue["default"]) as engine:
        assert engine.engine == "sqlite"
        engine.push([b"one"])
        assert engine.size() == 1
    assert path.exists()


def test_unknown_engine_names_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        engine_class("kafka", key_path="email.queue.events")
    assert caught.value.key_path == "email.queue.events.engine"
    assert "'kafka'" in str(caught.value)
    assert "memory, redis, sqlite" in str(caught.value)


def test_missing_redis_package_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "postroom.queue.redis", raising=False)
    monkeypatch.setitem(sys.modules, "redis", None)  # makes "import redis" fail
    with pytest.raises(ConfigError) as caught:
        engine_class("redis")
    assert caught.value.key_path == "email.queue.default.engine"
    assert "pip install 'postroom[redis]'" in str(caught.value)


def test_redis_engine_is_built_from_the_url_without_connecting() -> None:
    config = load_config(
        {"email": {"queue": {"default": {"engine": "redis", "port": 1, "name": "mail"}}}}
    )
    engine = open_queue(config.email.queue["default"])
    assert engine.engine == "redis"
    assert "127.0.0.1:1" in repr(engine)
    engine.close()
