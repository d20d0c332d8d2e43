"""The ``postroom`` command as users run it: ``python -m postroom`` in a subprocess.

Each test runs in its own ``tmp_path`` as working directory, so the embedded default (no config
file) keeps its SQLite queue and database under ``tmp_path/.postroom/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postroom import payload
from postroom.errors import NotFoundError, StoreError
from postroom.queue.sqlite import SqliteQueue
from postroom.store import NewMessage, Store, open_store


def postroom(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m postroom ARGS`` in ``cwd`` with no POSTROOM_* variables but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    return subprocess.run(
        [sys.executable, "-m", "postroom", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    return lines[-1]


def _take_all(tmp_path: Path) -> list[payload.QueuedEmail]:
    queue = SqliteQueue(str(tmp_path / ".postroom" / "queue.db"), name="postroom")
    try:
        taken = queue.take(100, 0.5)
        queue.ack([t.tag for t in taken])
        return [payload.decode(t.payload) for t in taken]
    finally:
        queue.close()


# -- check-config -------------------------------------------------------------------------------

VALID = """\
email:
  queue:
    default:
      engine: redis
      url: redis://:queue-pass-123@redis.internal:6379/2
  server:
    max-fails: 4
    smtp:
      host: smtp.example.com
      port: 587
      auth:
        username: abc@def.com
        password: ${SMTP_PASSWORD}
"""


def test_check_config_valid_file_hides_the_password(tmp_path: Path) -> None:
    (tmp_path / "prod.yaml").write_text(VALID)
    result = postroom(
        tmp_path, "check-config", "-c", "prod.yaml", env={"SMTP_PASSWORD": "s3cret-smtp"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# source: prod.yaml\n")
    assert "s3cret-smtp" not in result.stdout and "queue-pass-123" not in result.stdout
    assert "********" in result.stdout
    assert "max-fails: 4" in result.stdout
    assert "host: smtp.example.com" in result.stdout


def test_check_config_reads_postroom_config_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "prod.yaml").write_text(VALID)
    result = postroom(
        tmp_path,
        "check-config",
        env={
            "POSTROOM_CONFIG": "prod.yaml",
            "SMTP_PASSWORD": "x",
            "POSTROOM_EMAIL__SERVER__MAX_FAILS": "9",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# source: $POSTROOM_CONFIG=prod.yaml\n")
    assert "max-fails: 9" in result.stdout


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("email:\n  server:\n    max-time: 1x\n", "email.server.max-time"),
        ("email:\n  server:\n    smtp:\n      prot: 25\n", "email.server.smtp"),
        ("email:\n  buffer: many\n", "email.buffer"),
    ],
)
def test_check_config_invalid_file_exits_2_naming_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    result = postroom(tmp_path, "check-config", "-c", "bad.yaml")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert _one_error_line(result).startswith(f"postroom: {key}")


def test_check_config_missing_file_exits_2(tmp_path: Path) -> None:
    result = postroom(tmp_path, "check-config", "-c", "nope.yaml")
    assert result.returncode == 2
    assert "nope.yaml" in _one_error_line(result)


# -- send ---------------------------------------------------------------------------------------


def test_send_with_the_embedded_default_reaches_the_sqlite_queue(tmp_path: Path) -> None:
    result = postroom(
        tmp_path,
        "send",
        "--from",
        "Ana <ana@example.com>",
        "--to",
        "bo@example.com",
        "--subject",
        "Hi",
        "--text",
        "Hello",
    )
    assert result.returncode == 0, result.stderr
    message_id = result.stdout.strip()
    assert len(message_id) == 26 and result.stdout == message_id + "\n"
    [queued] = _take_all(tmp_path)
    assert queued.id == message_id
    assert queued.email["from"] == "Ana <ana@example.com>"
    assert (queued.email["to"], queued.email["subject"], queued.email["text"]) == (
        ["bo@example.com"],
        "Hi",
        "Hello",
    )
    assert abs(queued.send_after - queued.queued_at) < timedelta(seconds=1)


def test_send_later_schedules_it(tmp_path: Path) -> None:
    result = postroom(
        tmp_path,
        "send",
        "--from",
        "a@example.com",
        "--to",
        "b@example.com",
        "--later",
        "1h30m",
        env={"POSTROOM_FROM": "ignored@example.com"},
    )
    assert result.returncode == 0, result.stderr
    [queued] = _take_all(tmp_path)
    assert queued.id == result.stdout.strip()
    assert queued.email["from"] == "a@example.com"
    # send_later fixes the due time just before the outbox stamps queued_at
    delay = queued.send_after - queued.queued_at
    assert abs(delay - timedelta(hours=1, minutes=30)) < timedelta(seconds=1)


def test_send_from_the_environment_and_text_from_stdin(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    result = subprocess.run(
        [sys.executable, "-m", "postroom", "send", "--to", "b@example.com", "--text-file", "-"],
        cwd=tmp_path,
        env={**clean, "POSTROOM_FROM": "env@example.com"},
        input="piped body\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [queued] = _take_all(tmp_path)
    assert (queued.email["from"], queued.email["text"]) == ("env@example.com", "piped body\n")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--later", "5x"], "'5x'"),
        (["--at", "next tuesday"], "'next tuesday'"),
        (["--attach", "missing.pdf"], "'missing.pdf' does not exist"),
    ],
)
def test_send_bad_input_exits_2_and_queues_nothing(
    tmp_path: Path, args: list[str], named: str
) -> None:
    result = postroom(tmp_path, "send", "--from", "a@example.com", "--to", "b@example.com", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert named in _one_error_line(result)
    assert not (tmp_path / ".postroom" / "queue.db").exists()


# -- commands on the database -------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """The database the embedded default uses when the working directory is ``tmp_path``."""
    opened = open_store(f"sqlite:///{tmp_path / '.postroom' / 'postroom.db'}")
    opened.migrate()
    yield opened
    opened.close()


def _row(message_id: str, status: str = "queued", failure: str | None = None) -> NewMessage:
    created = datetime.now(UTC) - timedelta(minutes=5)
    return NewMessage(
        id=message_id,
        status=status,
        priority=0,
        created_at=created,
        send_after=created,
        expires_at=created + timedelta(hours=1),
        mail_from="ana@example.com",
        recipients=["bo@example.com"],
        subject="Hello",
        message_id=f"<{message_id}@example.com>",
        data=b"{}",
        failure=failure,
    )


def test_status_cancel_retry_purge_stats(tmp_path: Path, store: Store) -> None:
    store.insert_messages([_row("Q1"), _row("F1", "failed", "550 5.1.1 user unknown")])

    status = postroom(tmp_path, "status", "F1")
    assert status.returncode == 0, status.stderr
    assert "failed" in status.stdout and "550 5.1.1 user unknown" in status.stdout

    cancel = postroom(tmp_path, "cancel", "Q1")
    assert (cancel.returncode, cancel.stdout) == (0, "cancelled Q1\n")
    assert store.get("Q1").status == "cancelled"

    retry = postroom(tmp_path, "retry", "F1")
    assert retry.returncode == 0, retry.stderr
    assert store.get("F1").status == "queued"

    stats = json.loads(postroom(tmp_path, "stats", "--since", "24h", "--json").stdout)
    assert (stats["counts"]["queued"], stats["counts"]["cancelled"]) == (1, 1)

    purge = postroom(tmp_path, "purge", "--older-than", "0s")
    assert purge.returncode == 0, purge.stderr
    assert purge.stdout.startswith("purged 1 messages")
    with pytest.raises(NotFoundError):
        store.get("Q1")
    assert store.get("F1").status == "queued"


def test_read_only_commands_never_create_or_migrate_the_schema(tmp_path: Path) -> None:
    for command in (["status", "01NOSUCHMESSAGE"], ["stats"]):
        result = postroom(tmp_path, *command)
        assert (result.returncode, result.stdout) == (1, "")
        assert "has no postroom tables" in result.stderr
        assert "start `postroom serve` once" in result.stderr
    with open_store(f"sqlite:///{tmp_path / '.postroom' / 'postroom.db'}") as untouched:
        assert untouched.schema_version() == 0


def test_status_of_an_unknown_id(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / '.postroom' / 'postroom.db'}") as store:
        store.migrate()
    result = postroom(tmp_path, "status", "01NOSUCHMESSAGE")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "postroom: no message with id 01NOSUCHMESSAGE\n"


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = postroom(tmp_path)
    assert result.returncode == 2
    assert "COMMAND" in _one_error_line(result)


# -- serve --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_dev_delivers_what_send_queued_and_stops_on_sigterm(tmp_path: Path) -> None:
    sent = postroom(
        tmp_path,
        "send",
        "--from",
        "a@example.com",
        "--to",
        "b@example.com",
        "--subject",
        "via serve",
    )
    assert sent.returncode == 0, sent.stderr
    message_id = sent.stdout.strip()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "postroom", "serve", "--dev"],
        cwd=tmp_path,
        env={**clean, "POSTROOM_DEV_SMTP_PORT": str(_free_port())},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        state = ""
        with open_store(f"sqlite:///{tmp_path / '.postroom' / 'postroom.db'}") as db:
            while time.monotonic() < deadline and state != "sent":
                time.sleep(0.1)
                with contextlib.suppress(NotFoundError, StoreError):
                    state = db.get(message_id).status
        assert state == "sent"
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    # `postroom check-config | head -0`: the pipe is closed before anything is written
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "postroom", "check-config"],
            cwd=tmp_path,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == ""
