"""Everything postroom keeps under its data folders is its owner's alone, whatever the umask.

A real ``postroom serve --dev`` on the embedded default (SQLite queue and database under
``./.postroom/``, capture server writing ``.eml`` files) moves one message through while the
umask is the common 022; then every folder there must be 0700 and every file 0600, the SQLite
``-wal``, ``-shm`` and ``.lock`` files included.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom._files import private_dir, private_file, write_private
from postroom.client import Outbox
from postroom.config import load_config
from postroom.dispatch.server import Server
from postroom.message import Email
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes_under(root: Path) -> dict[str, int]:
    """Every folder and file under ``root`` (itself included) by relative path."""
    found = {".": mode(root)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = mode(path)
    return found


def wait_for_eml(folder: Path, timeout_s: float) -> list[Path]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sorted(folder.glob("*.eml")) if folder.is_dir() else []
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no .eml in {folder} after {timeout_s}s")


def test_serve_dev_keeps_every_data_file_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    server = Server(config, dev=True, dev_port=free_port())
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with Outbox(config) as outbox:
            Email(
                from_="app@example.com", to="user@example.org", bcc="audit@example.org", text="x"
            ).enqueue(outbox=outbox)
            assert outbox.flush(30) == 0
        wait_for_eml(tmp_path / ".postroom" / "mailbox", 30)
        modes = modes_under(tmp_path / ".postroom")  # while running: -wal and -shm exist
    finally:
        server.stop()
        thread.join(60)
    expected_files = {
        "queue.db",
        "queue.db-wal",
        "queue.db-shm",
        "postroom.db",
        "postroom.db-wal",
        "postroom.db-shm",
        "postroom.db.lock",
    }
    assert expected_files <= set(modes), sorted(modes)
    assert any(name.endswith(".eml") for name in modes), sorted(modes)
    folders = {".", "mailbox"}
    assert {name: oct(m) for name, m in modes.items() if name in folders} == {
        ".": "0o700",
        "mailbox": "0o700",
    }
    files = {name: oct(m) for name, m in modes.items() if name not in folders}
    assert set(files.values()) == {"0o600"}, files


def test_the_helpers_set_exact_modes_under_a_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o777)  # nothing would be readable, not even by the owner
    try:
        folder = private_dir(tmp_path / "a" / "b")
        file = private_file(folder / "data.db")
        write_private(folder / "message.eml", b"hello")
    finally:
        os.umask(old)
    assert [oct(mode(p)) for p in (tmp_path / "a", folder)] == ["0o700", "0o700"]
    assert [oct(mode(p)) for p in (file, folder / "message.eml")] == ["0o600", "0o600"]
    assert (folder / "message.eml").read_bytes() == b"hello"


def test_the_helpers_leave_what_exists_as_it_is(tmp_path: Path, umask_022: None) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    existing = shared / "queue.db"
    existing.write_bytes(b"")
    os.chmod(existing, 0o640)
    assert private_dir(shared) == shared
    assert private_file(existing) == existing
    assert oct(mode(shared)) == "0o755" and oct(mode(existing)) == "0o640"
    assert oct(mode(private_dir(shared / "new"))) == "0o700"


def test_private_dir_refuses_a_file_in_its_place(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "taken")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "taken" / "below")
