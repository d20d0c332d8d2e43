"""The dashboard's pages and JSON API through Starlette's test client, on every engine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("starlette")

from starlette.testclient import TestClient

from postroom.config import load_config
from postroom.store import NewMessage, Store
from postroom.web import create_app
from tests.webdata import add_message, deliver, utc

NOW = utc(2026, 12, 3, 12, 0)
BASE = "http://127.0.0.1:8025"


def config_for(url: str, **web: str) -> object:
    return load_config(
        {
            "email": {
                "server": {
                    "database": {
                        "engine": "sqlite3" if url.startswith("sqlite") else "postgres",
                        "url": url,
                    }
                },
                "web": dict(web),
            }
        }
    )


@pytest.fixture
def seeded(store: Store) -> dict[str, str]:
    """One sent, one failed, one queued (scheduled) message and one with a hostile subject."""
    ids = {}
    ids["sent"] = add_message(
        store, created_at=NOW - timedelta(minutes=30), subject="Welcome aboard"
    )
    deliver(store, ids["sent"], at=NOW - timedelta(minutes=29), outcome="sent")
    ids["failed"] = add_message(
        store, created_at=NOW - timedelta(minutes=20), subject="Invoice 42", to=("bob@example.org",)
    )
    deliver(store, ids["failed"], at=NOW - timedelta(minutes=19), outcome="failed")
    ids["hostile"] = add_message(
        store,
        created_at=NOW - timedelta(minutes=10),
        subject="<script>alert(1)</script>",
        sender="Mallory <mallory@example.com>",
        html="<p>Hi</p><script>document.title='pwned'</script><img src='https://tracker.example/x.png'>",
        attachment=(b"id,total\n1,42\n", "report.csv"),
    )
    deliver(store, ids["hostile"], at=NOW - timedelta(minutes=9), outcome="sent")
    ids["scheduled"] = add_message(
        store, created_at=NOW - timedelta(minutes=5), send_after=NOW + timedelta(hours=2)
    )
    return ids


@pytest.fixture
def client(store_url: str, store: Store, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(config_for(store_url), now=lambda: NOW)  # type: ignore[arg-type]
    with TestClient(app, base_url=BASE) as c:
        yield c


def test_overview_shows_counts_backlog_and_charts(
    client: TestClient, seeded: dict[str, str]
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.text.count("<svg") == 3
    assert 'id="backlog-due">0<' in page.text
    assert "no such user" in page.text  # top failure reason


def test_search_by_subject_words_recipient_status_and_key(
    client: TestClient, seeded: dict[str, str]
) -> None:
    def ids(**params: str) -> list[str]:
        found = client.get("/api/messages", params=params)
        assert found.status_code == 200, found.text
        return [m["id"] for m in found.json()["messages"]]

    assert ids(subject="invoice") == [seeded["failed"]]
    assert ids(to="bob@") == [seeded["failed"]]
    assert ids(status="sent") == [seeded["hostile"], seeded["sent"]]
    assert ids(q=seeded["sent"]) == [seeded["sent"]]
    assert ids(**{"from": "mallory"}) == [seeded["hostile"]]
    assert ids(subject="nothing-like-this") == []
    assert len(ids()) == 4


def test_search_by_message_id_with_or_without_brackets(
    client: TestClient, store: Store, seeded: dict[str, str]
) -> None:
    message_id = store.get(seeded["failed"]).message_id
    assert message_id is not None
    for key in (message_id, message_id.strip("<>")):
        found = client.get("/api/messages", params={"q": key}).json()["messages"]
        assert [m["id"] for m in found] == [seeded["failed"]]


def test_paging_goes_through_every_message_once(client: TestClient, seeded: dict[str, str]) -> None:
    seen, before = [], ""
    for _ in range(5):
        body = client.get("/api/messages", params={"limit": "1", "before": before}).json()
        seen += [m["id"] for m in body["messages"]]
        if not body["next"]:
            break
        before = body["next"]
    assert sorted(seen) == sorted(seeded.values())
    assert len(seen) == 4


def test_bad_search_input_is_a_400_naming_the_parameter(client: TestClient) -> None:
    answer = client.get("/api/messages", params={"status": "lost"})
    assert answer.status_code == 400
    assert "'lost' is not a status" in answer.json()["error"]
    page = client.get("/messages", params={"since": "yesterday"})
    assert page.status_code == 400
    assert "since: &#39;yesterday&#39; is neither a duration" in page.text


def test_hostile_subject_and_sender_render_as_text(
    client: TestClient, seeded: dict[str, str]
) -> None:
    for path in ("/messages", f"/messages/{seeded['hostile']}", "/"):
        page = client.get(path)
        assert "<script>alert(1)</script>" not in page.text
    page = client.get(f"/messages/{seeded['hostile']}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "Mallory &lt;mallory@example.com&gt;" in page.text


def test_html_preview_is_sandboxed_and_blocks_scripts_and_remote_loads(
    client: TestClient, seeded: dict[str, str]
) -> None:
    page = client.get(f"/messages/{seeded['hostile']}")
    assert f'sandbox="" src="/messages/{seeded["hostile"]}/preview"' in page.text
    preview = client.get(f"/messages/{seeded['hostile']}/preview")
    csp = preview.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
    assert "img-src data:" in csp  # no remote images: the tracker is not loaded
    assert "<script>" in preview.text  # shown as the sender wrote it, but it cannot run


def test_message_page_shows_attempts_replies_and_recipient_outcomes(
    client: TestClient, seeded: dict[str, str]
) -> None:
    page = client.get(f"/messages/{seeded['failed']}")
    assert page.status_code == 200
    assert "permanent" in page.text and "no such user" in page.text
    assert 'class="state-refused"' in page.text
    assert 'id="retry"' in page.text and 'id="cancel"' not in page.text
    detail = client.get(f"/api/messages/{seeded['failed']}").json()
    assert detail["message"]["status"] == "failed"
    assert detail["attempts"][0]["replies"][0]["code"] == 550
    assert detail["recipients"] == [
        {"recipient": "bob@example.org", "state": "refused", "reply": "550 5.1.1 no such user"}
    ]
    assert ["Subject", "Invoice 42"] in detail["headers"]


def test_attachment_download_raw_and_eml(client: TestClient, seeded: dict[str, str]) -> None:
    base = f"/messages/{seeded['hostile']}"
    attachment = client.get(f"{base}/attachments/0")
    assert attachment.content == b"id,total\n1,42\n"
    assert attachment.headers["content-disposition"] == 'attachment; filename="report.csv"'
    assert attachment.headers["content-type"] == "application/octet-stream"
    assert client.get(f"{base}/attachments/7").status_code == 404
    raw = client.get(f"{base}/raw")
    assert raw.headers["content-type"].startswith("text/plain")
    assert "Subject: <script>alert(1)</script>" in raw.text
    assert client.get(f"{base}/download").headers["content-type"] == "message/rfc822"


def test_unknown_message_is_404(client: TestClient) -> None:
    assert client.get("/messages/NOPE").status_code == 404
    assert client.get("/api/messages/NOPE").status_code == 404


def _csrf(client: TestClient) -> str:
    return str(client.get("/api/csrf").json()["csrf_token"])


def test_retry_and_cancel_buttons_change_the_state(
    client: TestClient, store: Store, seeded: dict[str, str]
) -> None:
    token = _csrf(client)
    done = client.post(f"/messages/{seeded['failed']}/retry", data={"csrf_token": token})
    assert done.status_code == 200  # followed the redirect back to the message page
    assert "queued again" in done.text
    assert store.get(seeded["failed"]).status == "queued"
    client.post(f"/messages/{seeded['scheduled']}/cancel", data={"csrf_token": token})
    assert store.get(seeded["scheduled"]).status == "cancelled"
    again = client.post(f"/messages/{seeded['sent']}/cancel", data={"csrf_token": token})
    assert "only queued messages can be cancelled" in again.text
    assert store.get(seeded["sent"]).status == "sent"


def test_actions_without_the_csrf_value_are_refused(
    client: TestClient, store: Store, seeded: dict[str, str]
) -> None:
    _csrf(client)  # the cookie is there, the form value is not
    refused = client.post(f"/messages/{seeded['failed']}/retry", data={"csrf_token": "guess"})
    assert refused.status_code == 403
    assert client.post(f"/api/messages/{seeded['failed']}/retry").status_code == 403
    cross = client.post(
        f"/messages/{seeded['failed']}/retry",
        data={"csrf_token": _csrf(client)},
        headers={"sec-fetch-site": "cross-site"},
    )
    assert cross.status_code == 403
    assert store.get(seeded["failed"]).status == "failed"


def test_api_cancel_and_retry(client: TestClient, store: Store, seeded: dict[str, str]) -> None:
    headers = {"x-csrf-token": _csrf(client)}
    ok = client.post(f"/api/messages/{seeded['failed']}/retry", headers=headers)
    assert ok.status_code == 200 and ok.json()["id"] == seeded["failed"]
    wrong = client.post(f"/api/messages/{seeded['sent']}/retry", headers=headers)
    assert wrong.status_code == 409
    assert "only failed or expired messages can be retried" in wrong.json()["error"]
    assert client.post("/api/messages/NOPE/cancel", headers=headers).status_code == 404


def test_api_stats(client: TestClient, seeded: dict[str, str]) -> None:
    body = client.get("/api/stats").json()
    assert body["counts"]["sent"] == 2 and body["counts"]["failed"] == 1
    assert body["backlog"] == {"due": 0, "scheduled": 1, "oldest_due_age_s": None}
    assert sum(p["sent"] for p in body["per_minute"]) == 2
    assert sum(p["failed"] for p in body["per_minute"]) == 1
    assert body["top_failures"][0]["count"] == 1
    assert len(body["latency"]) == 24
    assert sum(p["count"] for p in body["latency"]) == 2
    assert body["latency"][-2]["count"] == 2 and body["latency"][0]["p50_s"] is None


def test_healthz_and_readyz(client: TestClient, store: Store) -> None:
    assert client.get("/healthz").text == "ok\n"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    needs_one = client.get("/readyz", params={"dispatchers": "1"})
    assert needs_one.status_code == 503
    assert needs_one.json()["dispatchers_alive"] == 0


def test_readyz_fails_when_the_database_has_no_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    app = create_app(config_for(url))  # type: ignore[arg-type]
    with TestClient(app, base_url=BASE) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert "start `postroom serve` once" in ready.json()["database"]
        page = c.get("/")
        assert page.status_code == 503 and "start `postroom serve` once" in page.text
        assert "no postroom tables" in c.get("/api/stats").json()["error"]


def test_loopback_without_token_refuses_other_host_names(client: TestClient) -> None:
    rebound = client.get("/", headers={"host": "evil.example:8025"})
    assert rebound.status_code == 421
    assert client.get("/", headers={"host": "localhost:8025"}).status_code == 200


def test_a_poison_payload_is_shown_as_stored(client: TestClient, store: Store) -> None:
    row = NewMessage(
        id="poison-1f2e",
        status="failed",
        priority=0,
        created_at=NOW,
        send_after=NOW,
        expires_at=NOW + timedelta(hours=1),
        mail_from="",
        recipients=[],
        subject="",
        message_id=None,
        data=b"\xff not json <b>",
        failure="payload cannot be decoded",
    )
    store.insert_messages([row], now=NOW)
    page = client.get("/messages/poison-1f2e")
    assert page.status_code == 200
    assert "cannot be rendered as an email" in page.text
    assert client.get("/messages/poison-1f2e/raw").content == b"\xff not json <b>"
