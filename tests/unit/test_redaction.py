"""Passwords are never shown: every URL that may hold one is redacted wherever postroom shows it."""

from __future__ import annotations

import logging
import socket
import textwrap
import threading
from pathlib import Path

import pytest

from postroom import Email, Outbox
from postroom.cli import main
from postroom.config import ConfigError, QueueConfig, load_config, redact_url, render_config
from postroom.errors import StoreError
from postroom.store import open_store

SECRET = "pa/ss#Word9"
# (url, the password inside it): passwords a parser would cut short or read as a host
URLS = [
    ("postgresql://u:pa/ss#Word9@db:5432/app", SECRET),
    ("redis://:pa?ssWord9@cache:6379/0", "pa?ssWord9"),
    ("postgresql://u:p@ssWord9@db:5432/app", "p@ssWord9"),
    ("postgresql://u@db:5432/app?sslmode=require&password=Word9x", "Word9x"),
    ("postgresql://db/app?sslpassword=Word9y&password=Word9z", "Word9y"),
    ("rediss://user:Word9%40x@cache:6380/1", "Word9%40x"),
    ("no scheme user:Word9q@host", "Word9q"),
]


def fragments(secret: str) -> list[str]:
    """The password and every piece of it a parser could split off at / ? # @ %."""
    pieces = [secret]
    for separator in "/?#@%":
        pieces += [piece for piece in secret.split(separator) if len(piece) >= 3]
    return [piece for piece in pieces if piece not in ("", "u", "db")]


def assert_hidden(text: str, secret: str) -> None:
    for piece in fragments(secret):
        assert piece not in text, f"{piece!r} shown in {text!r}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("url", "secret"), URLS)
def test_redact_url_hides_every_piece_of_the_password(url: str, secret: str) -> None:
    shown = redact_url(url)
    assert_hidden(shown, secret)
    assert "********" in shown


def test_redact_url_keeps_what_is_not_secret() -> None:
    assert redact_url("postgresql://u:pw@db:5432/app") == "postgresql://u:********@db:5432/app"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"
    assert redact_url("sqlite:///data/a:b@c.db") == "sqlite:///data/a:b@c.db"
    assert redact_url("postgresql://u@db/app") == "postgresql://u@db/app"


def test_redact_url_also_hides_the_given_secrets_in_any_text() -> None:
    shown = redact_url("AUTH failed for hunter2 (hunter2)", secrets=["hunter2", ""])
    assert shown == "AUTH failed for ******** (********)"


@pytest.mark.parametrize(
    ("key", "url", "secret"),
    [
        ("email.server.database.url", "postgresql://u:pa/ss#Word9@db:5432/app", SECRET),
        ("email.server.database.url", "postgresql://u:p@ssWord9@db:5432/app", "p@ssWord9"),
        ("email.queue.default.url", "redis://:pa?ssWord9@cache:6379/0", "pa?ssWord9"),
        ("email.queue.default.url", "redis://:Word9@cache:bad/0", "Word9"),
        ("email.queue.default.url", "http://:Word9x@cache/0", "Word9x"),
        ("email.server.database.url", "mysql://u:Word9y@db/app", "Word9y"),
    ],
)
def test_config_errors_name_the_key_and_hide_the_password(key: str, url: str, secret: str) -> None:
    section, _, _ = key.rpartition(".")
    data: dict[str, object] = {"url": url}
    for part in reversed(section.split(".")):
        data = {part: data}
    with pytest.raises(ConfigError) as caught:
        load_config(data, env={})
    message = str(caught.value)
    assert message.startswith(f"{key}: ")
    assert_hidden(message, secret)


def test_repr_and_check_config_hide_query_passwords() -> None:
    config = load_config(
        {"email": {"server": {"database": {"url": "postgresql://u@db/app?password=Word9z"}}}},
        env={},
    )
    assert_hidden(repr(config), "Word9z")
    assert_hidden(render_config(config), "Word9z")
    assert_hidden(repr(QueueConfig(url="redis://:Word9q@cache:6379/0")), "Word9q")


def test_store_errors_hide_query_and_user_info_passwords() -> None:
    url = f"postgresql://u:Word9a@127.0.0.1:{closed_port()}/app?password=Word9b"
    with open_store(url) as store, pytest.raises(StoreError) as caught:
        store.migrate()
    for text in (str(caught.value), store.url, repr(store)):
        assert_hidden(text, "Word9a")
        assert_hidden(text, "Word9b")


def test_a_url_that_does_not_parse_is_shown_redacted() -> None:
    with pytest.raises(StoreError) as caught:
        open_store("u:Word9c@db/app")
    assert_hidden(str(caught.value), "Word9c")


@pytest.mark.parametrize("command", [["status", "X"], ["stats"], ["purge", "--older-than", "1d"]])
def test_commands_never_print_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    config = tmp_path / "postroom.yaml"
    port = closed_port()
    config.write_text(
        textwrap.dedent(
            f"""
            email:
              server:
                database:
                  url: "postgresql://u@127.0.0.1:{port}/app?password=Word9d"
            """
        ),
        encoding="utf-8",
    )
    code = main([*command, "-c", str(config)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "Word9d" not in out + err
    assert err.startswith("postroom: ") and "********" in err


def test_a_password_with_an_at_sign_never_reaches_the_resolver() -> None:
    with pytest.raises(StoreError) as caught:
        open_store(f"postgresql://u:p@ssWord9@127.0.0.1:{closed_port()}/app")
    assert "ambiguous" in str(caught.value)
    assert_hidden(str(caught.value), "p@ssWord9")


class _Lines(logging.Handler):
    """Collects formatted log lines; ``seen`` is set at the first one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.seen.set()


def test_queue_errors_and_log_lines_hide_the_redis_password() -> None:
    url = f"redis://:Word9e%2Fx@127.0.0.1:{closed_port()}/0"
    config = load_config({"email": {"queue": {"default": {"url": url}}}}, env={})
    assert_hidden(repr(config), "Word9e%2Fx")
    lines = _Lines()
    logger = logging.getLogger("postroom.client")
    logger.addHandler(lines)
    outbox = Outbox(config, flush_timeout_s=0)
    try:
        Email(from_="a@example.com", to="b@example.com", text="x").enqueue(outbox=outbox)
        assert lines.seen.wait(10), "the outbox logged no warning"
    finally:
        outbox.close(0)
        logger.removeHandler(lines)
    text = "\n".join(lines.lines)
    assert "cannot push" in text and "QueueError" in text
    assert_hidden(text, "Word9e%2Fx")
    assert_hidden(text, "Word9e/x")
