"""The Flask extension: configuration from app.config, factories, flush at process exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from postroom import Email
from postroom.config import load_config
from postroom.contrib.flask import Postroom
from postroom.errors import ConfigError
from postroom.payload import decode
from postroom.queue import open_queue


def queue_config(tmp_path: Path) -> dict[str, Any]:
    return {"email": {"queue": {"default": {"engine": "sqlite", "path": str(tmp_path / "q.db")}}}}


def queued(config: dict[str, Any]) -> list[dict[str, Any]]:
    queue = open_queue(load_config(config).email.queue["default"])
    emails: list[dict[str, Any]] = []
    try:
        while batch := queue.take(1000, 0):
            emails.extend(decode(item.payload).email for item in batch)
        return emails
    finally:
        queue.close()


def make_app(config: dict[str, Any]) -> Flask:
    app = Flask(__name__)
    app.config["POSTROOM"] = config

    @app.post("/signup")
    def signup() -> dict[str, str]:
        e = Email(from_="app@example.com", to="ana@example.org", subject="Welcome", text="Hi")
        return {"id": e.enqueue()}

    return app


def test_postroom_app_queues_from_a_handler(tmp_path: Path) -> None:
    config = queue_config(tmp_path)
    app = make_app(config)
    ext = Postroom(app)
    assert app.extensions["postroom"] is ext
    assert ext.config is not None and ext.config.email.queue["default"].engine == "sqlite"
    response = app.test_client().post("/signup")
    assert response.status_code == 200
    assert ext.flush(10) == 0
    assert ext.outbox.pending() == 0
    assert [email["subject"] for email in queued(config)] == ["Welcome"]


def test_init_app_in_an_application_factory(tmp_path: Path) -> None:
    ext = Postroom()
    assert ext.config is None
    config = queue_config(tmp_path)
    app = make_app(config)
    ext.init_app(app)
    assert app.extensions["postroom"] is ext
    app.test_client().post("/signup")
    assert ext.flush(10) == 0
    assert len(queued(config)) == 1


def test_a_bad_configuration_is_refused_at_init_app() -> None:
    app = Flask(__name__)
    app.config["POSTROOM"] = {"email": {"buffer": "many"}}
    with pytest.raises(ConfigError, match=r"email\.buffer"):
        Postroom(app)


SCRIPT = r"""
import json, sys
from flask import Flask
from postroom import Email
from postroom.contrib.flask import Postroom

app = Flask("shutdown")
app.config["POSTROOM"] = json.loads(sys.argv[1])
Postroom(app)

@app.post("/signup/<int:n>")
def signup(n):
    Email(from_="app@example.com", to=f"u{n}@example.org", subject=f"n{n}", text="x").enqueue()
    return "ok"

client = app.test_client()
for n in range(200):
    assert client.post(f"/signup/{n}").status_code == 200
# no flush: the process exit pushes what is buffered
"""


def test_the_outbox_is_flushed_when_the_process_exits(tmp_path: Path) -> None:
    config = queue_config(tmp_path)
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script), json.dumps(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(email["subject"] for email in queued(config)) == sorted(
        f"n{n}" for n in range(200)
    )
