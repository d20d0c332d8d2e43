"""Argument handling of the command line: types, required options, environment defaults."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from postroom.cli import build_parser, main
from postroom.cli.common import duration_arg, header_arg, readable_file, since_arg, when_arg


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "COMMAND" in _usage_error([], capsys)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("postroom ")


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("serve", "send", "status", "stats", "cancel", "retry", "purge", "check-config"):
        assert command in out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["send", "--from", "a@x.org", "--to", "b@x.org", "--later", "5x"], "'5x'"),
        (["send", "--from", "a@x.org", "--to", "b@x.org", "--later=-5m"], "'-5m'"),
        (["send", "--from", "a@x.org", "--to", "b@x.org", "--at", "tomorrow"], "'tomorrow'"),
        (
            [
                "send",
                "--from",
                "a@x.org",
                "--to",
                "b@x.org",
                "--later",
                "5m",
                "--at",
                "2026-12-01T09:00",
            ],
            "not allowed with",
        ),
        (
            ["send", "--from", "a@x.org", "--to", "b@x.org", "--text", "t", "--text-file", "f"],
            "not allowed with",
        ),
        (["send", "--from", "a@x.org", "--to", "b@x.org", "--header", "NoColon"], "'NoColon'"),
        (["send", "--from", "a@x.org", "--to", "b@x.org", "--priority", "high"], "'high'"),
        (
            ["send", "--from", "a@x.org", "--to", "b@x.org", "--attach", "/nonexistent/x.pdf"],
            "does not exist",
        ),
        (["send", "--to", "b@x.org"], "--from"),
        (["stats", "--since", "yesterday"], "'yesterday'"),
        (["purge"], "--older-than"),
        (["purge", "--older-than", "30"], "'30'"),
        (["status"], "ID"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(
    argv: list[str],
    named: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("POSTROOM_FROM", raising=False)
    monkeypatch.delenv("POSTROOM_PURGE_OLDER_THAN", raising=False)
    err = _usage_error(argv, capsys)
    assert named in err.splitlines()[-1]


def test_environment_supplies_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_FROM", "env@x.org")
    monkeypatch.setenv("POSTROOM_PURGE_OLDER_THAN", "7d")
    monkeypatch.setenv("POSTROOM_DEV", "yes")
    monkeypatch.setenv("POSTROOM_JSON", "1")
    parser = build_parser()
    assert parser.parse_args(["send", "--to", "b@x.org"]).from_ == "env@x.org"
    assert parser.parse_args(["send", "--from", "cli@x.org"]).from_ == "cli@x.org"
    assert parser.parse_args(["purge"]).older_than == timedelta(days=7)
    assert parser.parse_args(["purge", "--older-than", "1h"]).older_than == timedelta(hours=1)
    assert parser.parse_args(["serve"]).dev is True
    assert parser.parse_args(["stats"]).json is True


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POSTROOM_DEV", "POSTROOM_JSON"):
        monkeypatch.delenv(name, raising=False)
    parser = build_parser()
    args = parser.parse_args(["serve"])
    assert (args.dev, args.config) == (False, None)
    assert parser.parse_args(["stats", "-c", "p.yaml"]).config == "p.yaml"
    assert parser.parse_args(["status", "X"]).json is False


def test_send_collects_repeated_options(tmp_path: Path) -> None:
    attachment = tmp_path / "a.txt"
    attachment.write_text("x")
    args = build_parser().parse_args(
        [
            "send",
            "--from",
            "a@x.org",
            "--to",
            "b@x.org",
            "--to",
            "c@x.org",
            "--cc",
            "d@x.org",
            "--header",
            "X-One: 1",
            "--header",
            "X-Two:two: parts",
            "--attach",
            str(attachment),
            "--priority",
            "5",
            "--later",
            "1h30m",
        ]
    )
    assert args.to == ["b@x.org", "c@x.org"]
    assert args.cc == ["d@x.org"] and args.bcc == []
    assert args.header == [("X-One", "1"), ("X-Two", "two: parts")]
    assert args.attach == [attachment]
    assert args.priority == 5
    assert args.later == timedelta(hours=1, minutes=30)
    assert args.at is None


def test_when_arg_naive_means_local_time() -> None:
    expected = datetime(2026, 12, 1, 9, 0).astimezone(UTC)
    assert when_arg("2026-12-01T09:00") == expected
    assert when_arg("2026-12-01T09:00").tzinfo is UTC


def test_when_arg_keeps_an_explicit_offset() -> None:
    plus_one = timezone(timedelta(hours=1))
    assert when_arg("2026-12-01T09:00+01:00") == datetime(2026, 12, 1, 9, tzinfo=plus_one)
    assert when_arg("2026-12-01T09:00Z") == datetime(2026, 12, 1, 9, tzinfo=UTC)


def test_since_arg_accepts_duration_or_time() -> None:
    before = datetime.now(UTC)
    since = since_arg("24h")
    assert (
        before - timedelta(hours=24, seconds=5) < since <= datetime.now(UTC) - timedelta(hours=24)
    )
    assert since_arg("2026-01-01T00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)


def test_small_types() -> None:
    assert duration_arg("30d") == timedelta(days=30)
    assert header_arg("List-Id:  <x.example>  ") == ("List-Id", "<x.example>")
    for bad in (": value", "", "Name value"):
        with pytest.raises(argparse.ArgumentTypeError):
            header_arg(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="is a directory"):
        readable_file(".")
