"""Who may use the dashboard: the token (header or login cookie), CSRF, the dev mailbox, the
refusal to listen off loopback without a token, and no token in any log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")

from starlette.testclient import TestClient

from postroom.cli import main
from postroom.config import Config, load_config
from postroom.errors import ConfigError
from postroom.store import Store, open_store
from postroom.transport.capture import CaptureServer
from postroom.web import create_app, listen_address
from tests.webdata import add_message, deliver, utc

TOKEN = "correct-horse-battery-staple"
NOW = utc(2026, 12, 3, 12, 0)


def sqlite_config(tmp_path: Path, **web: str) -> Config:
    url = f"sqlite:///{tmp_path / 'postroom.db'}"
    return load_config({"email": {"server": {"database": {"url": url}}, "web": dict(web)}})


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'postroom.db'}")
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def guarded(tmp_path: Path, db: Store) -> Iterator[TestClient]:
    app = create_app(sqlite_config(tmp_path, token=TOKEN, listen="0.0.0.0:8025"))
    with TestClient(app, base_url="http://dashboard.example") as client:
        yield client


def test_without_the_token_every_page_and_api_is_refused(guarded: TestClient) -> None:
    for path in ("/api/messages", "/api/stats", "/metrics", "/readyz"):
        answer = guarded.get(path)
        assert answer.status_code == 401, path
    page = guarded.get("/messages", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/messages"
    assert guarded.get("/healthz").status_code == 200  # says only that the process lives
    wrong = guarded.get("/api/stats", headers={"authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401


def test_the_token_in_a_header_opens_everything(guarded: TestClient) -> None:
    assert guarded.get("/api/stats", headers={"authorization": f"Bearer {TOKEN}"}).is_success
    assert guarded.get("/metrics", headers={"x-postroom-token": TOKEN}).is_success


def test_a_token_header_needs_no_csrf_value(guarded: TestClient, db: Store) -> None:
    message_id = add_message(db, created_at=NOW)
    deliver(db, message_id, at=NOW, outcome="failed")
    answer = guarded.post(f"/api/messages/{message_id}/retry", headers={"x-postroom-token": TOKEN})
    assert answer.status_code == 200
    assert db.get(message_id).status == "queued"


def test_login_form_sets_a_cookie_that_is_not_the_token(guarded: TestClient) -> None:
    form = guarded.get("/login?next=/messages")
    assert form.status_code == 200
    csrf = guarded.cookies["postroom_csrf"]
    wrong = guarded.post("/login", data={"token": "nope", "csrf_token": csrf, "next": "/"})
    assert wrong.status_code == 401 and "not the token" in wrong.text
    signed_in = guarded.post(
        "/login",
        data={"token": TOKEN, "csrf_token": csrf, "next": "/messages"},
        follow_redirects=False,
    )
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/messages"
    session = signed_in.cookies["postroom_session"]
    assert TOKEN not in session
    assert "httponly" in signed_in.headers["set-cookie"].lower()
    assert guarded.get("/messages").status_code == 200


def test_login_never_redirects_to_another_site(guarded: TestClient) -> None:
    guarded.get("/login")
    csrf = guarded.cookies["postroom_csrf"]
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        answer = guarded.post(
            "/login",
            data={"token": TOKEN, "csrf_token": csrf, "next": target},
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/"


def test_login_without_the_csrf_value_is_refused(guarded: TestClient) -> None:
    guarded.get("/login")
    answer = guarded.post("/login", data={"token": TOKEN, "next": "/"}, follow_redirects=False)
    assert answer.status_code == 403
    assert "postroom_session" not in answer.cookies


def test_off_loopback_a_token_is_required(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"email\.web\.token: is required to listen on 0\.0\.0\.0"
    ):
        listen_address(sqlite_config(tmp_path), "0.0.0.0:8025")
    assert listen_address(sqlite_config(tmp_path), "[::1]:9000") == ("::1", 9000)
    assert listen_address(sqlite_config(tmp_path, token=TOKEN), "0.0.0.0:80") == ("0.0.0.0", 80)


def test_postroom_web_refuses_to_start_off_loopback_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["web", "--listen", "0.0.0.0:8025"]) == 2
    assert "email.web.token: is required to listen on 0.0.0.0" in capsys.readouterr().err


def test_config_checks_listen_and_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"email\.web\.listen: 'localhost' is not host:port"):
        sqlite_config(tmp_path, listen="localhost")
    with pytest.raises(ConfigError, match=r"email\.web\.token: must be at least 16 characters"):
        sqlite_config(tmp_path, token="short")
    config = sqlite_config(tmp_path, token=TOKEN)
    assert TOKEN not in repr(config)
    assert config.redacted_dict()["email"]["web"] == {  # type: ignore[index]
        "listen": "127.0.0.1:8025",
        "token": "********",
    }


def test_the_token_never_reaches_a_log_line(
    guarded: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    guarded.get("/api/stats", headers={"authorization": f"Bearer {TOKEN}"})
    guarded.get("/login")
    guarded.post("/login", data={"token": TOKEN, "csrf_token": guarded.cookies["postroom_csrf"]})
    assert TOKEN not in caplog.text


# -- the dev mailbox ----------------------------------------------------------------------------


@pytest.fixture
def captured(tmp_path: Path) -> Path:
    mailbox = tmp_path / "mailbox"
    with CaptureServer(mailbox, port=0) as capture:
        handler = capture._handler
        for subject in ("first", "<b>second</b>"):
            body = f"From: a@example.com\r\nTo: b@example.com\r\nSubject: {subject}\r\n\r\nHi\r\n"
            handler.store(["b@example.com", "hidden@example.com"], body.encode())
    return mailbox


def test_mailbox_lists_newest_first_opens_raw_download_delete(
    tmp_path: Path, db: Store, captured: Path
) -> None:
    app = create_app(sqlite_config(tmp_path), mailbox_dir=captured)
    with TestClient(app, base_url="http://127.0.0.1:8025") as client:
        listing = client.get("/mailbox")
        assert listing.text.index("&lt;b&gt;second&lt;/b&gt;") < listing.text.index(">first</a>")
        assert "hidden@example.com" in listing.text  # the envelope shows Bcc recipients
        names = sorted(p.name for p in captured.glob("*.eml"))
        opened = client.get(f"/mailbox/{names[0]}")
        assert opened.status_code == 200 and "Hi" in opened.text
        raw = client.get(f"/mailbox/{names[0]}/raw")
        assert raw.text.startswith("X-Postroom-Rcpt-To: b@example.com, hidden@example.com")
        download = client.get(f"/mailbox/{names[0]}/download")
        assert download.headers["content-disposition"] == f'attachment; filename="{names[0]}"'
        assert client.get("/mailbox/..%2Fpostroom.db").status_code == 404
        assert client.get("/mailbox/not-a-capture.eml/raw").status_code == 404
        refused = client.post("/mailbox/delete-all", data={"csrf_token": "x"})
        assert refused.status_code == 403 and len(list(captured.glob("*.eml"))) == 2
        client.post("/mailbox/delete-all", data={"csrf_token": client.cookies["postroom_csrf"]})
        assert list(captured.glob("*.eml")) == []
        assert "Nothing captured yet" in client.get("/mailbox").text


def test_without_dev_there_is_no_mailbox(tmp_path: Path, db: Store) -> None:
    with TestClient(create_app(sqlite_config(tmp_path)), base_url="http://127.0.0.1") as client:
        assert client.get("/mailbox").status_code == 404
        assert "Mailbox" not in client.get("/").text
