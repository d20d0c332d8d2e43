"""Command-line and configuration edges: refused with a message and exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from postroom.cli import main
from postroom.config import ConfigError, load_config
from postroom.durations import MAX_DURATION, parse_duration


@pytest.mark.parametrize(
    "argv",
    [
        ["stats", "--since", "99999999999d"],
        ["purge", "--older-than", "99999999999d"],
        ["stats", "--since", "0001-01-01T00:00:00+01:00"],
        ["stats", "--since", "9999-12-31T23:00:00-05:00"],
        ["send", "--from", "a@example.com", "--to", "b@example.com", "--later", "99999999999d"],
        [
            "send",
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
            "--at",
            "0001-01-01T00:00+01:00",
        ],
    ],
)
def test_times_out_of_range_exit_2_with_a_message(
    argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "Traceback" not in err and "OverflowError" not in err
    assert "longer than 100 years" in err or "outside the times UTC can represent" in err


def test_durations_are_bounded_at_100_years() -> None:
    assert parse_duration("36525d") == MAX_DURATION
    for text in ("36526d", "100000000h", "9" * 400 + "s"):
        with pytest.raises(ValueError, match="longer than 100 years"):
            parse_duration(text)


@pytest.mark.parametrize("value", ["100000000h", timedelta(days=40_000)])
def test_config_durations_over_the_bound_are_refused_naming_the_key(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"email": {"server": {"max-time": value}}}, env={})
    assert str(caught.value).startswith("email.server.max-time: ")
    assert "longer than 100 years" in str(caught.value)


def test_environment_durations_are_bounded_too() -> None:
    env = {"POSTROOM_EMAIL__SERVER__RETRY__MAX": "99999999999d"}
    with pytest.raises(ConfigError, match=r"^email\.server\.retry\.max: .*longer than 100 years"):
        load_config({}, env=env)


@pytest.mark.parametrize(
    "helo",
    [
        "me.example.com XCLIENT ADDR=1.2.3.4",
        "me.example.com\r\nRSET",
        "[::1]",
        "[IPv6:1.2.3.4]",
        "[300.1.1.1]",
        "-bad.example.com",
        "",
    ],
)
def test_helo_must_be_a_host_name_or_an_address_literal(helo: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"email": {"server": {"smtp": {"helo": helo}}}}, env={})
    assert str(caught.value).startswith("email.server.smtp.helo: ")


@pytest.mark.parametrize(
    "helo", ["mail.example.com", "localhost", "[192.0.2.1]", "[IPv6:2001:db8::1]"]
)
def test_good_helo_names_load(helo: str) -> None:
    config = load_config({"email": {"server": {"smtp": {"helo": helo}}}}, env={})
    assert config.email.server.smtp.helo == helo


def test_a_password_without_tls_needs_an_explicit_yes() -> None:
    smtp = {"tls": "none", "auth": {"username": "u", "password": "pw"}}
    with pytest.raises(ConfigError) as caught:
        load_config({"email": {"server": {"smtp": smtp}}}, env={})
    message = str(caught.value)
    assert message.startswith("email.server.smtp.tls: ")
    assert "email.server.smtp.allow-plaintext-password: true" in message
    assert "pw" not in message.replace("password", "")
    allowed = load_config(
        {"email": {"server": {"smtp": {**smtp, "allow-plaintext-password": True}}}}, env={}
    )
    assert allowed.email.server.smtp.allow_plaintext_password is True
    without_password = load_config({"email": {"server": {"smtp": {"tls": "none"}}}}, env={})
    assert without_password.email.server.smtp.tls == "none"


def test_postgres_without_psycopg_prints_the_install_hint(tmp_path: Path) -> None:
    config = tmp_path / "postroom.yaml"
    config.write_text(
        textwrap.dedent(
            """
            email:
              server:
                database:
                  url: "postgresql://u:pw@127.0.0.1:1/app"
            """
        ),
        encoding="utf-8",
    )
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from postroom.cli import main\n"
        f"sys.exit(main(['stats', '-c', {str(config)!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "pip install 'postroom[postgres]'" in done.stderr
    assert done.stderr.startswith("postroom: email.server.database.engine: ")
