"""``postroom health``: the database and the dispatchers' heartbeats, for probes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postroom.cli import main
from postroom.store import DispatcherBeat, open_store


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "postroom.yaml"
    url = f"sqlite:///{tmp_path / 'postroom.db'}"
    path.write_text(f"email:\n  server:\n    database:\n      url: {url}\n")
    return path


def beat(tmp_path: Path, name: str, age_s: float) -> None:
    with open_store(f"sqlite:///{tmp_path / 'postroom.db'}") as store:
        store.migrate()
        now = datetime.now(UTC)
        store.heartbeat(DispatcherBeat(name, "host", 1, now), now - timedelta(seconds=age_s), 60)


def test_health_needs_the_schema(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "-c", str(config_file)]) == 1
    assert "start `postroom serve` once" in capsys.readouterr().err


def test_health_counts_dispatchers_with_a_recent_heartbeat(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beat(tmp_path, "a:1:x", age_s=1)
    beat(tmp_path, "b:2:y", age_s=60)  # silent for 30 heartbeats: dead
    assert main(["health", "-c", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "a:1:x  alive" in out and "b:2:y  silent" in out
    assert main(["health", "-c", str(config_file), "--dispatchers", "2"]) == 1
    assert "only 1 dispatcher(s) alive, 2 required" in capsys.readouterr().err
    assert main(["health", "-c", str(config_file), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["healthy"] is True and body["dispatchers_alive"] == 1
    assert [d["alive"] for d in body["dispatchers"]] == [True, False]
