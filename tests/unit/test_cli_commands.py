"""Commands run in-process through ``main([...])``: output and exit codes.

The database is a real SQLite file under ``tmp_path``, filled through :mod:`postroom.store`;
``send`` pushes to a per-test memory queue that the test then reads.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postroom import payload
from postroom.cli import main, manage
from postroom.config import load_config
from postroom.queue import open_queue
from postroom.store import (
    AttemptRecord,
    DispatcherBeat,
    Finish,
    NewMessage,
    RecipientReply,
    Store,
    open_store,
)

MAX_TIME = timedelta(hours=2)


@pytest.fixture
def config_path(tmp_path: Path) -> str:
    queue_name = f"cli-{uuid.uuid4().hex[:10]}"
    path = tmp_path / "postroom.yaml"
    path.write_text(
        "email:\n"
        "  flush-timeout: 5s\n"
        f"  queue:\n    default:\n      engine: memory\n      name: {queue_name}\n"
        "  server:\n"
        "    max-time: 2h\n"
        f"    database:\n      path: {tmp_path / 'postroom.db'}\n"
        "    smtp:\n      auth:\n        username: u\n        password: hunter2-secret\n"
    )
    return str(path)


@pytest.fixture
def store(config_path: str) -> Iterator[Store]:
    config = load_config(config_path, env={})
    opened = open_store(config.email.server.database.sqlalchemy_url())
    opened.migrate()
    yield opened
    opened.close()


def _new(
    message_id: str,
    *,
    status: str = "queued",
    failure: str | None = None,
    created_at: datetime | None = None,
) -> NewMessage:
    created = created_at or datetime.now(UTC) - timedelta(seconds=30)
    return NewMessage(
        id=message_id,
        status=status,
        priority=0,
        created_at=created,
        send_after=created,
        expires_at=created + MAX_TIME,
        mail_from="ana@example.com",
        recipients=["bo@example.com", "cy@example.com"],
        subject="Quarterly report",
        message_id=f"<{message_id}@example.com>",
        data=b"{}",
        failure=failure,
    )


def _attempt(code: int, enhanced: str, reply: str, outcome: str) -> AttemptRecord:
    end = datetime.now(UTC)
    return AttemptRecord(
        started_at=end - timedelta(milliseconds=250),
        ended_at=end,
        outcome=outcome,
        code=code,
        enhanced_code=enhanced,
        reply=reply,
        dispatcher="host-a:42",
        recipients=["bo@example.com", "cy@example.com"],
    )


def _deliver(store: Store, message_id: str, *, latency_s: float) -> None:
    """Insert a row, claim it and record a 451 retry, then (claimed again) a 250 sent
    ``latency_s`` after creation. Nothing else may be queued at the time."""
    store.insert_messages([_new(message_id)])
    now = datetime.now(UTC)
    assert [c.id for c in store.claim_due("host-a:42", 10, 60, now)] == [message_id]
    store.finish(
        "host-a:42",
        [
            Finish(
                id=message_id,
                status="queued",
                attempt=_attempt(451, "4.3.0", "try\r\n later", "temporary"),
                count_fail=True,
                failure="451 4.3.0 try later",
                next_attempt_at=now,
                pending_recipients=["cy@example.com"],
                sent_at=None,
            )
        ],
    )
    assert [c.id for c in store.claim_due("host-a:42", 10, 60, datetime.now(UTC))] == [message_id]
    created = store.get(message_id).created_at
    store.finish(
        "host-a:42",
        [
            Finish(
                id=message_id,
                status="sent",
                attempt=_attempt(250, "2.0.0", "OK queued", "sent"),
                count_fail=False,
                failure=None,
                next_attempt_at=None,
                pending_recipients=[],
                sent_at=created + timedelta(seconds=latency_s),
            )
        ],
    )


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- status -------------------------------------------------------------------------------------


def test_status_shows_state_times_attempts(
    config_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    _deliver(store, "M1", latency_s=1.5)
    code, out, err = _run(["status", "-c", config_path, "M1"], capsys)
    assert (code, err) == (0, "")
    fields = dict(
        line.split(None, 1)
        for line in out.split("\n\n")[0].splitlines()
        if not line.startswith(("send after", "next attempt", "last failed"))
    )
    assert fields["status"] == "sent"
    assert fields["recipients"] == "bo@example.com, cy@example.com"
    assert fields["pending"] == "-"
    assert fields["fails"] == "1"
    assert fields["sent"].endswith("Z")
    attempts = out.split("attempts:\n")[1].splitlines()
    assert attempts[0].split() == [
        "#",
        "started",
        "took",
        "outcome",
        "code",
        "enhanced",
        "dispatcher",
        "reply",
    ]
    first, second = attempts[1].split(), attempts[2].split()
    assert first[2:] == ["250ms", "temporary", "451", "4.3.0", "host-a:42", "try", "later"]
    assert second[3:7] == ["sent", "250", "2.0.0", "host-a:42"]
    # columns line up: every row's outcome starts where the header's does
    column = attempts[0].index("outcome")
    assert attempts[1][column:].startswith("temporary") and attempts[2][column:].startswith("sent")


def test_status_json_is_one_document_with_stable_keys(
    config_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    store.insert_messages([_new("M1", status="failed", failure="550 5.1.1 no such user")])
    code, out, _ = _run(["status", "-c", config_path, "M1", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"message", "recipients", "attempts"}
    message = doc["message"]
    assert message["status"] == "failed"
    assert message["failure"] == "550 5.1.1 no such user"
    assert message["recipients"] == ["bo@example.com", "cy@example.com"]
    assert message["created_at"].endswith("Z")
    assert (
        datetime.fromisoformat(message["expires_at"])
        - datetime.fromisoformat(message["created_at"])
        == MAX_TIME
    )
    assert "data" not in message and message["data_size"] == 2
    assert doc["attempts"] == []


def test_status_of_an_unknown_id(
    config_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["status", "-c", config_path, "NOPE"], capsys) == (
        1,
        "",
        "postroom: no message with id NOPE\n",
    )


# -- cancel / retry -----------------------------------------------------------------------------


def test_cancel_a_queued_message_once(
    config_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    store.insert_messages([_new("M1")])
    assert _run(["cancel", "-c", config_path, "M1"], capsys) == (0, "cancelled M1\n", "")
    assert store.get("M1").status == "cancelled"
    code, out, err = _run(["cancel", "-c", config_path, "M1"], capsys)
    assert (code, out) == (1, "")
    assert err.startswith("postroom: ") and "cancelled" in err and err.count("\n") == 1
    assert _run(["cancel", "-c", config_path, "NOPE"], capsys) == (
        1,
        "",
        "postroom: no message with id NOPE\n",
    )


def test_retry_queues_a_failed_message_with_a_new_expiry(
    config_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    store.insert_messages([_new("M1", status="failed", failure="550 no"), _new("M2")])
    before = datetime.now(UTC)
    code, out, _ = _run(["retry", "-c", config_path, "M1"], capsys)
    assert code == 0 and out.startswith("queued M1 again (expires ")
    info = store.get("M1")
    assert (info.status, info.num_fails) == ("queued", 0)
    assert before + MAX_TIME <= info.expires_at <= datetime.now(UTC) + MAX_TIME
    code, _, err = _run(["retry", "-c", config_path, "M2"], capsys)
    assert code == 1 and "queued" in err
    assert store.get("M2").status == "queued"


# -- stats --------------------------------------------------------------------------------------


def test_stats_json_counts_latency_and_failures(
    config_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    _deliver(store, "S1", latency_s=2.0)
    _deliver(store, "S2", latency_s=4.0)
    store.insert_messages(
        [
            _new("Q1"),
            _new("F1", status="failed", failure="550 5.1.1 no such user"),
            _new("F2", status="failed", failure="550 5.1.1 no such user"),
            _new("F3", status="failed", failure="554 spam"),
            _new("OLD", status="failed", failure="ancient", created_at=old),
        ]
    )
    code, out, _ = _run(["stats", "-c", config_path, "--since", "24h", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["counts"] == {
        "queued": 1,
        "sending": 0,
        "sent": 2,
        "failed": 3,
        "expired": 0,
        "cancelled": 0,
    }
    assert doc["total"] == 6
    assert doc["attempts"] == 4
    assert doc["latency_s"]["p50"] == pytest.approx(2.0, abs=0.01)
    assert doc["latency_s"]["p99"] == pytest.approx(4.0, abs=0.01)
    assert doc["top_failures"][0] == {"reason": "550 5.1.1 no such user", "count": 2}
    assert "ancient" not in [f["reason"] for f in doc["top_failures"]]
    assert doc["since"].endswith("Z")

    code, out, _ = _run(["stats", "-c", config_path], capsys)
    assert code == 0
    assert "messages (all time):" in out
    assert "  failed     4" in out
    assert "enqueue-to-sent latency: p50 2s  p95 4s  p99 4s" in out
    assert "  2      550 5.1.1 no such user" in out


# -- purge --------------------------------------------------------------------------------------


def test_purge_deletes_finished_messages_and_reports_progress(
    config_path: str,
    store: Store,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _deliver(store, "S1", latency_s=1.0)
    store.insert_messages([_new("Q1"), _new("F1", status="failed", failure="x")])
    code, out, _ = _run(["purge", "-c", config_path, "--older-than", "1h", "--json"], capsys)
    assert code == 0 and json.loads(out)["deleted"] == 0

    monkeypatch.setattr(manage, "PROGRESS_EVERY_S", 0.0)
    code, out, err = _run(["purge", "-c", config_path, "--older-than", "0s"], capsys)
    assert code == 0
    assert out.startswith("purged 2 messages last updated before ")
    assert err == "purge: 2 deleted so far\n"
    assert store.get("Q1").status == "queued"
    assert store.attempts("S1") == []
    assert _run(["status", "-c", config_path, "S1"], capsys)[0] == 1


def test_purge_is_quiet_on_short_runs(
    config_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    store.insert_messages([_new("F1", status="failed", failure="x")])
    code, out, err = _run(["purge", "-c", config_path, "--older-than", "0s", "--json"], capsys)
    assert (code, err) == (0, "")
    assert json.loads(out)["deleted"] == 1


# -- check-config -------------------------------------------------------------------------------


def test_check_config_hides_secrets(config_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["check-config", "-c", config_path], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"# source: {config_path}\n")
    assert "hunter2-secret" not in out
    assert "password: '********'" in out or "password: ********" in out
    assert "max-time: 2h" in out


def test_check_config_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("email:\n  server:\n    max-time: 1x\n")
    code, out, err = _run(["check-config", "-c", str(bad)], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("postroom: email.server.max-time") and err.count("\n") == 1


# -- send ---------------------------------------------------------------------------------------


def _take_one(config_path: str) -> payload.QueuedEmail:
    queue = open_queue(load_config(config_path, env={}).email.queue["default"])
    taken = queue.take(10, 1.0)
    assert len(taken) == 1
    queue.ack([taken[0].tag])
    return payload.decode(taken[0].payload)


def test_send_queues_the_described_email(
    config_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.csv"
    report.write_text("a,b\n")
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"\x89PNG")
    body = tmp_path / "body.txt"
    body.write_text("Hëllo from a file\n", encoding="utf-8")
    code, out, err = _run(
        [
            "send",
            "-c",
            config_path,
            "--from",
            "Ana <ana@example.com>",
            "--to",
            "bo@example.com",
            "--to",
            "Cy <cy@example.com>",
            "--cc",
            "di@example.com",
            "--bcc",
            "ed@example.com",
            "--reply-to",
            "help@example.com",
            "--subject",
            "Report",
            "--text-file",
            str(body),
            "--html",
            '<img src="cid:logo.png">',
            "--header",
            "X-Campaign: q4",
            "--priority",
            "7",
            "--attach",
            str(report),
            "--inline",
            str(logo),
        ],
        capsys,
    )
    assert code == 0
    assert err == "inline logo.png: cid:logo.png\n"
    message_id = out.strip()
    queued = _take_one(config_path)
    assert queued.id == message_id
    email = queued.email
    assert email["to"] == ["bo@example.com", "Cy <cy@example.com>"]
    assert (email["cc"], email["bcc"], email["reply_to"]) == (
        ["di@example.com"],
        ["ed@example.com"],
        ["help@example.com"],
    )
    assert (email["subject"], email["text"], email["priority"]) == (
        "Report",
        "Hëllo from a file\n",
        7,
    )
    assert email["headers"] == {"X-Campaign": "q4"}
    parts = {(a["filename"], a["inline"], a["content_id"]) for a in email["attachments"]}
    assert parts == {("report.csv", False, None), ("logo.png", True, "logo.png")}
    assert abs(queued.send_after - queued.queued_at) < timedelta(seconds=1)


def test_send_at_a_local_time(config_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        [
            "send",
            "-c",
            config_path,
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
            "--at",
            "2099-12-01T09:00",
        ],
        capsys,
    )
    assert code == 0
    queued = _take_one(config_path)
    assert queued.id == out.strip()
    assert queued.send_after == datetime(2099, 12, 1, 9, 0).astimezone(UTC)


def test_send_with_an_idempotency_key(config_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["send", "-c", config_path, "--from", "a@example.com", "--to", "b@example.com"]
    first = _run([*base, "--idempotency-key", "order-1/receipt"], capsys)
    again = _run([*base, "--later", "5m", "--idempotency-key", "order-1/receipt"], capsys)
    assert first[0] == again[0] == 0
    assert first[1] == again[1] == payload.keyed_message_id("order-1/receipt") + "\n"
    code, out, err = _run([*base, "--idempotency-key", "x" * 201], capsys)
    assert (code, out) == (2, "") and "idempotency_key is 201 characters long" in err


def test_send_refuses_bad_input_with_exit_2(
    config_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["send", "-c", config_path, "--from", "a@example.com"], capsys)
    assert (code, out) == (2, "")
    assert "--to" in err and err.count("\n") == 1
    code, out, err = _run(
        ["send", "-c", config_path, "--from", "not an address", "--to", "b@example.com"], capsys
    )
    assert (code, out) == (2, "")
    assert err.startswith("postroom: ") and "not an address" in err
    code, _, err = _run(
        [
            "send",
            "-c",
            config_path,
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
            "--header",
            "X-A: 1",
            "--header",
            "x-a: 2",
        ],
        capsys,
    )
    assert code == 2 and "given twice" in err


def test_send_fails_when_the_queue_does_not_take_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unreachable = tmp_path / "down.yaml"
    unreachable.write_text(
        "email:\n  flush-timeout: 200ms\n  queue:\n    default:\n"
        "      engine: redis\n      url: redis://127.0.0.1:1/0\n"
    )
    code, out, err = _run(
        ["send", "-c", str(unreachable), "--from", "a@example.com", "--to", "b@example.com"], capsys
    )
    assert (code, out) == (1, "")
    last = err.strip().splitlines()[-1]
    assert last.startswith("postroom: the queue did not take message ")
    assert "within 200ms (email.flush-timeout)" in last


# -- control characters never reach the terminal -------------------------------------------------

EVIL = "\x1b]0;owned\x07\x1b[2J\u202eevil\x9b31m"


def _evil_message(store: Store, message_id: str) -> None:
    store.insert_messages([replace(_new(message_id), subject=f"Hi {EVIL}")])
    now = datetime.now(UTC)
    assert [c.id for c in store.claim_due("host-a:42", 10, 60, now)] == [message_id]
    store.finish(
        "host-a:42",
        [
            Finish(
                id=message_id,
                status="failed",
                attempt=_attempt(550, "5.7.1", f"denied {EVIL}", "permanent"),
                count_fail=True,
                failure=f"550 5.7.1 denied {EVIL}",
                next_attempt_at=None,
                pending_recipients=[],
                sent_at=None,
            )
        ],
    )


def _assert_inert(text: str) -> None:
    for char in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert char not in text, f"{char!r} reached the output"


def test_status_and_stats_escape_control_characters(
    config_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    _evil_message(store, "EVIL1")
    code, out, err = _run(["status", "-c", config_path, "EVIL1"], capsys)
    assert (code, err) == (0, "")
    _assert_inert(out)
    assert "Hi \\x1b]0;owned\\x07\\x1b[2J\\u202eevil\\x9b31m" in out  # shown, escaped
    assert out.count("\\x1b") == 6  # subject, failure and reply, two each
    code, out, err = _run(["stats", "-c", config_path], capsys)
    assert code == 0
    _assert_inert(out)
    assert "denied \\x1b]0;owned" in out


def test_json_output_escapes_control_characters(
    config_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    _evil_message(store, "EVIL2")
    code, out, _ = _run(["status", "--json", "-c", config_path, "EVIL2"], capsys)
    assert code == 0
    _assert_inert(out)
    assert json.loads(out)["message"]["subject"] == f"Hi {EVIL}"  # the JSON still says it all


def test_error_messages_escape_control_characters(
    config_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["status", "-c", config_path, "no\x1b[2Jsuch"], capsys)
    assert code == 1
    _assert_inert(err)
    assert "no\\x1b[2Jsuch" in err


# -- per-recipient states and dispatchers -------------------------------------------------------


def _rcpt(recipient: str, code: int, enhanced: str, text: str) -> RecipientReply:
    return RecipientReply(recipient=recipient, code=code, enhanced_code=enhanced, text=text)


def test_status_shows_each_recipients_state_and_reply(
    config_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    store.insert_messages([replace(_new("R1"), recipients=["ok@x.org", "t4@x.org", "p5@x.org"])])
    store.claim_due("host-a:42", 10, 60, datetime.now(UTC))
    replies = [
        _rcpt("ok@x.org", 250, "2.0.0", "queued"),
        _rcpt("t4@x.org", 451, "4.7.1", "greylisted"),
        _rcpt("p5@x.org", 550, "5.1.1", "no such user"),
    ]
    attempt = replace(_attempt(250, "2.0.0", "queued", "sent"), replies=replies)
    store.finish(
        "host-a:42",
        [
            Finish(
                id="R1",
                status="queued",
                attempt=attempt,
                count_fail=True,
                failure="refused",
                next_attempt_at=datetime.now(UTC),
                pending_recipients=["t4@x.org"],
                sent_at=None,
                refused=["p5@x.org: 550 5.1.1 no such user"],
            )
        ],
    )
    code, out, _ = _run(["status", "-c", config_path, "R1"], capsys)
    assert code == 0
    section = out.split("\nrecipients:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[:2] for line in section] == [
        ["ok@x.org", "accepted"],
        ["t4@x.org", "pending"],
        ["p5@x.org", "refused"],
    ]
    assert section[2].endswith("550 5.1.1 no such user")
    code, out, _ = _run(["status", "-c", config_path, "--json", "R1"], capsys)
    doc = json.loads(out)
    assert [(r["recipient"], r["state"]) for r in doc["recipients"]] == [
        ("ok@x.org", "accepted"),
        ("t4@x.org", "pending"),
        ("p5@x.org", "refused"),
    ]
    assert doc["attempts"][0]["replies"][1]["code"] == 451
    assert doc["message"]["refused"] == ["p5@x.org: 550 5.1.1 no such user"]


def test_stats_shows_each_dispatcher_and_its_relay(
    config_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    up = DispatcherBeat(id="host-a:1:aa", host="host-a", pid=1, started_at=now)
    down = replace(
        up, id="host-b:2:bb", relay_down_since=now, relay_failure="535 5.7.8 bad credentials"
    )
    store.heartbeat(up, now, 60)
    store.heartbeat(down, now, 60)
    code, out, _ = _run(["stats", "-c", config_path], capsys)
    assert code == 0
    lines = out.split("dispatchers:\n")[1].splitlines()
    assert any(line.split()[0] == "host-a:1:aa" and line.endswith("up") for line in lines)
    assert any("down since" in line and "535 5.7.8 bad credentials" in line for line in lines)
    code, out, _ = _run(["stats", "-c", config_path, "--json"], capsys)
    relays = {d["id"]: d["relay"] for d in json.loads(out)["dispatchers"]}
    assert relays["host-a:1:aa"] == {"up": True, "down_since": None, "reason": None}
    assert relays["host-b:2:bb"]["up"] is False
    assert relays["host-b:2:bb"]["reason"] == "535 5.7.8 bad credentials"
