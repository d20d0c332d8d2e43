"""``postroom serve --dev`` runs the dashboard too, with the capture mailbox in it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

pytest.importorskip("uvicorn")


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


def wait_for(url: str, contains: str, timeout_s: float = 30) -> str:
    deadline, last = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        try:
            last = fetch(url)
        except OSError:
            last = ""
        if contains in last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{url} never showed {contains!r}; last answer: {last[:500]!r}")


def test_serve_dev_shows_captured_mail_in_the_dashboard(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    web_port = free_port()
    env = {
        **clean,
        "POSTROOM_DEV_SMTP_PORT": str(free_port()),
        "POSTROOM_EMAIL__WEB__LISTEN": f"127.0.0.1:{web_port}",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "postroom", "serve", "--dev"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{web_port}"
        wait_for(f"{base}/healthz", "ok")
        sent = subprocess.run(
            [
                sys.executable,
                "-m",
                "postroom",
                "send",
                "--from",
                "a@example.com",
                "--to",
                "b@example.com",
                "--subject",
                "Seen in the browser",
                "--text",
                "hi",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        wait_for(f"{base}/mailbox", "Seen in the browser")
        overview = wait_for(f"{base}/", "Overview")
        assert "Mailbox" in overview
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
        assert f"dashboard on http://127.0.0.1:{web_port}/" in err
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
