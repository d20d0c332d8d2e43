"""Real processes against real queue engines: exit without flush(), and fork() mid-stream.

Each test runs a script in a fresh interpreter that configures postroom, enqueues, and exits; the
test then takes everything from the real queue (Redis or a SQLite file) and checks every id the
script was given is there exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from postroom.config import load_config
from postroom.payload import decode
from postroom.queue import open_queue

SCRIPT = r"""
import json, os, sys
from postroom import client
from postroom.message import Email

config, out, mode = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
client.configure(config)


def burst(count, tag):
    return [
        Email(
            from_="Sender <sender@example.com>",
            to=["rcpt@example.com"],
            subject=f"{tag} {n}",
            text=f"{tag} body {n}",
        ).enqueue()
        for n in range(count)
    ]


def write(path, ids):
    with open(path, "w") as f:
        f.write("\n".join(ids))


if mode == "exit":
    write(out, burst(1000, "exit"))
    # no flush(): the interpreter exit must push the buffer
elif mode == "fork":
    before = burst(400, "before")
    pending_at_fork = client.default_outbox().pending()
    pid = os.fork()
    if pid == 0:
        write(out + ".child", burst(300, "child"))
        sys.exit(0)
    write(out + ".parent", before + burst(300, "parent"))
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"pending_at_fork": pending_at_fork, "child_status": status}))
elif mode == "multiprocessing":
    import multiprocessing

    def worker():  # a fork-context child ends with os._exit(): no atexit handlers run
        burst(2000, "worker")  # and returns at once: the last emails are still buffered

    process = multiprocessing.get_context("fork").Process(target=worker)
    process.start()
    process.join(60)
    print(json.dumps({"exitcode": process.exitcode}))
"""


def run_script(tmp_path: Path, config: dict[str, Any], mode: str) -> tuple[Path, str]:
    script = tmp_path / "enqueue.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ids"
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("POSTROOM_EMAIL__") or k == "POSTROOM_CONFIG")
    }
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(config), str(out), mode],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert "not pushed" not in done.stderr, done.stderr
    return out, done.stdout


def ids_in(path: Path) -> list[str]:
    return path.read_text().split()


def taken_ids(config: dict[str, Any]) -> Counter[str]:
    """Take every item from the configured queue; count the ids."""
    counts: Counter[str] = Counter()
    with open_queue(load_config(config).email.queue["default"]) as engine:
        while batch := engine.take(1000, 0.5):
            counts.update(decode(item.payload).id for item in batch)
            engine.ack([item.tag for item in batch])
    return counts


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "sqlite"])
def queue_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        queue = {"engine": "redis", "url": redis_url, "name": prefix}
    else:
        queue = {"engine": "sqlite", "path": str(tmp_path / "queue.db"), "name": "mail"}
    return {"email": {"queue": {"default": queue}}}


def test_exit_without_flush_pushes_every_email(
    tmp_path: Path, queue_config: dict[str, Any]
) -> None:
    out, _ = run_script(tmp_path, queue_config, "exit")
    sent = ids_in(out)
    assert len(set(sent)) == 1000
    counts = taken_ids(queue_config)
    assert set(counts) == set(sent)
    assert max(counts.values()) == 1


def test_fork_parent_and_child_each_push_their_own_emails_once(
    tmp_path: Path, queue_config: dict[str, Any]
) -> None:
    out, stdout = run_script(tmp_path, queue_config, "fork")
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["child_status"] == 0
    parent = ids_in(Path(f"{out}.parent"))
    child = ids_in(Path(f"{out}.child"))
    assert len(parent) == 700
    assert len(child) == 300
    assert not set(parent) & set(child)
    counts = taken_ids(queue_config)
    assert set(counts) == set(parent) | set(child)
    duplicated = sorted(i for i, n in counts.items() if n > 1)
    assert duplicated == [], f"{len(duplicated)} ids pushed twice (pending at fork: {report})"


def test_a_multiprocessing_child_pushes_its_emails_before_it_exits(
    tmp_path: Path, queue_config: dict[str, Any]
) -> None:
    _, stdout = run_script(tmp_path, queue_config, "multiprocessing")
    assert json.loads(stdout.strip().splitlines()[-1]) == {"exitcode": 0}
    subjects: Counter[str] = Counter()
    with open_queue(load_config(queue_config).email.queue["default"]) as engine:
        while batch := engine.take(1000, 0.5):
            subjects.update(decode(item.payload).email["subject"] for item in batch)
            engine.ack([item.tag for item in batch])
    assert subjects == Counter(f"worker {n}" for n in range(2000))
