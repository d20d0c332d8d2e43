"""Interpreter exit: the buffer is flushed, and what cannot be pushed is reported, not hidden."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("redis")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_exit_with_the_queue_down_warns_how_many_emails_are_lost(tmp_path: Path) -> None:
    config = {
        "email": {
            "flush-timeout": "1s",
            "queue": {"default": {"engine": "redis", "port": _closed_port(), "name": "mail"}},
        }
    }
    code = (
        "import postroom.client as client\n"
        "from postroom.message import Email\n"
        f"client.configure({config!r})\n"
        "for n in range(5):\n"
        "    Email(from_='a@x.org', to=['b@x.org'], subject=str(n), text='x').enqueue()\n"
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    elapsed_s = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert "cannot push to the redis queue 'mail'" in done.stderr
    assert "5 emails were lost: not pushed to the redis queue 'mail'" in done.stderr
    assert done.stderr.count("cannot push") == 1  # one warning for the outage, not one per try
    assert elapsed_s < 10  # the flush timeout bounded the wait at exit
