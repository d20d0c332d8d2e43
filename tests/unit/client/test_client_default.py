"""The process-wide outbox: configure(), flush(), submit() and lazy creation."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom import client
from postroom.client import default
from postroom.config import Config, load_config
from postroom.errors import ConfigError, QueueError
from postroom.message import Email
from postroom.payload import decode
from postroom.queue import open_queue


@pytest.fixture(autouse=True)
def fresh_default() -> Iterator[None]:
    default._outbox = None
    yield
    if default._outbox is not None:
        default._outbox.close(1.0)
    default._outbox = None


def memory_config(name: str) -> dict[str, object]:
    return {"email": {"queue": {"default": {"engine": "memory", "name": name}}}}


def make_email() -> Email:
    return Email(from_="a@example.com", to=["b@example.com"], subject="hi", text="body")


def test_import_does_no_work(tmp_path: Path) -> None:
    code = (
        "import sys, threading, postroom.client as c\n"
        "assert c.default._outbox is None\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert 'redis' not in sys.modules\n"
        "assert c.flush() == 0\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=60)
    assert list(tmp_path.iterdir()) == []  # no queue file, no directory


def test_configure_routes_module_level_submit_to_the_configured_queue() -> None:
    name = f"default-{uuid.uuid4().hex[:8]}"
    config = client.configure(memory_config(name))
    assert isinstance(config, Config)
    assert config.email.queue["default"].name == name
    message_id = client.submit(make_email(), send_after=None)
    assert client.flush(2.0) == 0
    [item] = open_queue(config.email.queue["default"]).take(10, 0)
    assert decode(item.payload).id == message_id


def test_configure_accepts_a_ready_config() -> None:
    config = load_config(memory_config("ready"))
    assert client.configure(config) is config
    assert client.default_outbox().config is config


def test_configure_again_flushes_and_closes_the_previous_outbox() -> None:
    first_config = client.configure(memory_config(f"first-{uuid.uuid4().hex[:8]}"))
    first = client.default_outbox()
    client.submit(make_email())
    client.configure(memory_config("second"))
    assert client.default_outbox() is not first
    assert first.pending() == 0
    assert open_queue(first_config.email.queue["default"]).size() == 1
    with pytest.raises(QueueError, match="closed"):
        first.enqueue(make_email())


def test_a_bad_configuration_is_refused_and_the_previous_default_stays() -> None:
    client.configure(memory_config("kept"))
    kept = client.default_outbox()
    with pytest.raises(ConfigError):
        client.configure({"email": {"buffer": 0}})
    assert client.default_outbox() is kept


def test_default_outbox_is_created_lazily_from_the_default_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTROOM_EMAIL__QUEUE__DEFAULT__ENGINE", "memory")
    monkeypatch.setenv("POSTROOM_EMAIL__BUFFER", "17")
    assert client.flush() == 0  # no outbox yet, nothing to do
    assert default._outbox is None
    outbox = client.default_outbox()
    assert outbox is client.default_outbox()
    assert outbox.capacity == 17
    assert outbox.engine_label.startswith("memory queue")


def test_submit_with_an_explicit_outbox_leaves_the_default_alone() -> None:
    config = load_config(memory_config(f"explicit-{uuid.uuid4().hex[:8]}"))
    with client.Outbox(config) as outbox:
        client.submit(make_email(), outbox=outbox)
        assert outbox.flush(2.0) == 0
    assert default._outbox is None
    assert open_queue(config.email.queue["default"]).size() == 1
