"""The queue contract of ``postroom.queue.base``, run unchanged against every engine.

``make_queue()`` opens one more handle on the same queue: for SQLite a new engine on the same
file, for Redis a new engine (and consumer) on the same stream, for memory the same object (a
memory queue cannot be shared any other way). Engine-specific tests follow the contract class.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from postroom.errors import ConfigError, QueueError
from postroom.queue.base import QueueEngine, Taken
from postroom.queue.memory import MemoryQueue
from postroom.queue.sqlite import SqliteQueue

if TYPE_CHECKING:
    import redis

MakeQueue = Callable[..., QueueEngine]


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeQueue]:
    """A factory of handles on one fresh queue; every handle is closed afterwards."""
    engine: str = request.param
    opened: list[QueueEngine] = []
    shared: list[MemoryQueue] = []
    if engine == "redis":  # resolved here: make() may run in other threads
        redis_url: str = request.getfixturevalue("redis_url")
        redis_name: str = request.getfixturevalue("redis_prefix")

    def make(redeliver_after_s: float = 300.0) -> QueueEngine:
        queue: QueueEngine
        if engine == "memory":
            if not shared:
                shared.append(MemoryQueue(redeliver_after_s=redeliver_after_s))
            return shared[0]
        if engine == "sqlite":
            queue = SqliteQueue(str(tmp_path / "queue.db"), redeliver_after_s=redeliver_after_s)
        else:
            from postroom.queue.redis import RedisQueue

            queue = RedisQueue(redis_url, name=redis_name, redeliver_after_s=redeliver_after_s)
        opened.append(queue)
        return queue

    yield make
    for queue in opened + shared:
        queue.close()


def take_all(queue: QueueEngine, expected: int, timeout_s: float = 5.0) -> list[Taken]:
    """Take until ``expected`` items arrived or ``timeout_s`` passed."""
    items: list[Taken] = []
    deadline = time.monotonic() + timeout_s
    while len(items) < expected and time.monotonic() < deadline:
        items.extend(queue.take(100, timeout_s=0.2))
    return items


class TestQueueContract:
    def test_push_take_ack_round_trip(self, make_queue: MakeQueue) -> None:
        queue = make_queue()
        queue.push([b"one", b"two", b"three"])
        items = queue.take(10, timeout_s=1.0)
        assert [i.payload for i in items] == [b"one", b"two", b"three"]
        assert [i.deliveries for i in items] == [1, 1, 1]
        assert len({i.tag for i in items}) == 3
        queue.ack([i.tag for i in items])
        assert queue.size() == 0
        assert queue.take(10, timeout_s=0) == []

    def test_fifo_within_and_across_batches(self, make_queue: MakeQueue) -> None:
        queue = make_queue()
        payloads = [f"m{i:03d}".encode() for i in range(60)]
        queue.push(payloads[:30])
        queue.push(payloads[30:])
        got: list[bytes] = []
        while len(got) < 60:
            batch = queue.take(7, timeout_s=1.0)
            assert batch, "queue ran dry early"
            got.extend(i.payload for i in batch)
            queue.ack([i.tag for i in batch])
        assert got == payloads

    def test_empty_take_waits_for_timeout_without_burning_cpu(self, make_queue: MakeQueue) -> None:
        queue = make_queue()
        queue.size()  # connect before measuring
        wall0, cpu0 = time.monotonic(), time.process_time()
        assert queue.take(10, timeout_s=0.3) == []
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        assert 0.3 <= wall < 1.0
        assert cpu < 0.15, f"an idle take used {cpu:.3f} s of CPU in {wall:.3f} s"

    def test_zero_timeout_returns_at_once(self, make_queue: MakeQueue) -> None:
        queue = make_queue()
        start = time.monotonic()
        assert queue.take(10, timeout_s=0) == []
        assert time.monotonic() - start < 0.2

    def test_max_items_is_respected(self, make_queue: MakeQueue) -> None:
        queue = make_queue()
        queue.push([bytes([n]) for n in range(10)])
        assert len(queue.take(3, timeout_s=1.0)) == 3
        assert len(queue.take(100, timeout_s=1.0)) == 7
        assert queue.take(100, timeout_s=0) == []

    def test_taken_items_are_invisible_to_another_consumer(self, make_queue: MakeQueue) -> None:
        first, second = make_queue(), make_queue()
        first.push([b"a", b"b", b"c"])
        assert len(first.take(10, timeout_s=1.0)) == 3
        assert second.take(10, timeout_s=0.2) == []
        first.push([b"d"])
        assert [i.payload for i in second.take(10, timeout_s=1.0)] == [b"d"]

    def test_unacked_item_is_redelivered(self, make_queue: MakeQueue) -> None:
        first, second = make_queue(redeliver_after_s=0.2), make_queue(redeliver_after_s=0.2)
        first.push([b"x"])
        [taken] = first.take(1, timeout_s=1.0)
        taken_at = time.monotonic()
        again = second.take(1, timeout_s=3.0)
        waited = time.monotonic() - taken_at
        assert [(i.payload, i.deliveries) for i in again] == [(b"x", 2)]
        assert 0.15 <= waited < 1.5
        assert again[0].tag  # a usable receipt
        second.ack([again[0].tag])
        assert second.size() == 0
        first.ack([taken.tag])  # the stale receipt of the first delivery is harmless
        assert first.size() == 0

    def test_acked_item_is_not_redelivered(self, make_queue: MakeQueue) -> None:
        queue = make_queue(redeliver_after_s=0.1)
        queue.push([b"x"])
        queue.ack([i.tag for i in queue.take(1, timeout_s=1.0)])
        assert queue.take(1, timeout_s=0.3) == []

    def test_ack_of_unknown_or_repeated_tag_is_a_no_op(self, make_queue: MakeQueue) -> None:
        queue = make_queue()
        queue.push([b"keep", b"done"])
        queue.ack(["no-such-tag", "", "1.deadbeef", "999999-0", "0-0", "42"])
        assert queue.size() == 2
        keep, done = queue.take(2, timeout_s=1.0)
        queue.ack([done.tag])
        queue.ack([done.tag])
        queue.ack([])
        assert queue.size() == 1
        queue.ack([keep.tag])
        assert queue.size() == 0

    def test_size_counts_waiting_and_taken(self, make_queue: MakeQueue) -> None:
        queue = make_queue()
        assert queue.size() == 0
        queue.push([b"1", b"2", b"3", b"4", b"5"])
        assert queue.size() == 5
        taken = queue.take(2, timeout_s=1.0)
        assert queue.size() == 5
        queue.ack([i.tag for i in taken])
        assert queue.size() == 3

    def test_binary_payloads_survive(self, make_queue: MakeQueue) -> None:
        queue = make_queue()
        payloads = [
            bytes(range(256)),
            b"",
            b"\x00" * 17,
            b"\r\n.\r\n",
            "naïve ☃".encode(),
            os.urandom(4096),
        ]
        queue.push(payloads)
        assert [i.payload for i in queue.take(10, timeout_s=1.0)] == payloads

    def test_one_megabyte_payload_survives(self, make_queue: MakeQueue) -> None:
        queue = make_queue()
        big = os.urandom(1 << 20)
        queue.push([big])
        [item] = queue.take(1, timeout_s=2.0)
        assert item.payload == big

    def test_concurrent_producers_lose_and_duplicate_nothing(self, make_queue: MakeQueue) -> None:
        consumer = make_queue()
        producers, batches, per_batch = 4, 10, 25

        def produce(n: int) -> None:
            queue = make_queue()
            for b in range(batches):
                queue.push([f"{n}:{b * per_batch + i:04d}".encode() for i in range(per_batch)])

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        total = producers * batches * per_batch
        items = take_all(consumer, total)
        payloads = [i.payload for i in items]
        assert len(payloads) == total
        assert len(set(payloads)) == total
        for n in range(producers):  # each producer's items come out in the order it pushed
            mine = [p for p in payloads if p.startswith(f"{n}:".encode())]
            assert mine == sorted(mine)
        consumer.ack([i.tag for i in items])
        assert consumer.size() == 0

    def test_blocked_take_wakes_when_another_thread_pushes(self, make_queue: MakeQueue) -> None:
        consumer, producer = make_queue(), make_queue()
        consumer.size()  # connect before timing

        def push_later() -> None:
            time.sleep(0.2)
            producer.push([b"wake"])

        thread = threading.Thread(target=push_later)
        start = time.monotonic()
        thread.start()
        items = consumer.take(10, timeout_s=5.0)
        waited = time.monotonic() - start
        thread.join()
        assert [i.payload for i in items] == [b"wake"]
        assert 0.2 <= waited < 0.8


# -- SQLite ----------------------------------------------------------------------------------------

_CONSUMER_SCRIPT = textwrap.dedent(
    """
    import sys
    from postroom.queue.sqlite import SqliteQueue

    queue = SqliteQueue(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    while True:
        items = queue.take(5, timeout_s=0.5)
        if not items:
            break
        queue.ack([i.tag for i in items])
        for item in items:
            print(item.payload.decode(), flush=True)
    queue.close()
    """
)


def test_sqlite_two_processes_never_take_the_same_item(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    total = 600
    with SqliteQueue(path) as queue:
        queue.push([f"item-{n:04d}".encode() for n in range(total)])
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CONSUMER_SCRIPT, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:  # both start together
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = [child.communicate(timeout=60)[0].split() for child in children]
    assert [child.returncode for child in children] == [0, 0]
    first, second = (set(out) for out in outputs)
    assert len(outputs[0]) == len(first) and len(outputs[1]) == len(second)
    assert first.isdisjoint(second)
    assert first | second == {f"item-{n:04d}" for n in range(total)}
    with SqliteQueue(path) as queue:
        assert queue.size() == 0


def test_sqlite_queues_share_a_file_by_name(tmp_path: Path) -> None:
    path = str(tmp_path / "deep" / "er" / "q.db")  # parent directories are created
    with SqliteQueue(path, name="alpha") as alpha, SqliteQueue(path, name="beta-2") as beta:
        alpha.push([b"a"])
        beta.push([b"b"])
        assert [i.payload for i in alpha.take(10, timeout_s=0)] == [b"a"]
        assert [i.payload for i in beta.take(10, timeout_s=0)] == [b"b"]


def test_sqlite_stale_receipt_does_not_ack_a_redelivered_item(tmp_path: Path) -> None:
    path = str(tmp_path / "q.db")
    with (
        SqliteQueue(path, redeliver_after_s=0.1) as first,
        SqliteQueue(path, redeliver_after_s=0.1) as second,
    ):
        first.push([b"x", b"y"])
        stale = first.take(2, timeout_s=0)
        time.sleep(0.15)
        again = second.take(2, timeout_s=1.0)
        assert [i.deliveries for i in again] == [2, 2]
        first.ack([i.tag for i in stale])  # both receipts are out of date
        assert first.size() == 2
        second.ack([again[0].tag, stale[1].tag])  # one current receipt, one stale
        assert [i.payload for i in second.take(2, timeout_s=0.5)] == [b"y"]
        assert second.size() == 1


@pytest.mark.parametrize("name", ["", "has space", 'x"; DROP TABLE y; --', "dot.ted", "a" * 101])
def test_sqlite_refuses_a_bad_queue_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="queue name"):
        SqliteQueue(str(tmp_path / "q.db"), name=name)


def test_sqlite_unusable_path_is_a_queue_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    queue = SqliteQueue(str(blocker / "q.db"))  # a file where a directory should be
    with pytest.raises(QueueError, match="sqlite queue"):
        queue.push([b"x"])


def _push_in_forked_child(queue: QueueEngine) -> None:
    pid = os.fork()
    if pid == 0:  # child: must open its own connection and succeed
        code = 1
        try:
            queue.push([b"from-child"])
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_sqlite_forked_child_uses_its_own_connection(tmp_path: Path) -> None:
    with SqliteQueue(str(tmp_path / "q.db")) as queue:
        queue.push([b"from-parent"])  # the parent's connection is open now
        _push_in_forked_child(queue)
        assert [i.payload for i in queue.take(10, timeout_s=1.0)] == [
            b"from-parent",
            b"from-child",
        ]


# -- Redis -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.redis
def test_redis_unreachable_server_raises_queue_error() -> None:
    from postroom.queue.redis import RedisQueue

    port = _free_port()
    queue = RedisQueue(f"redis://:sekret@127.0.0.1:{port}/0", name="nowhere")
    start = time.monotonic()
    for call in (lambda: queue.push([b"x"]), lambda: queue.take(1, 1.0), queue.size):
        with pytest.raises(QueueError) as info:
            call()
        assert f"127.0.0.1:{port}" in str(info.value)
        assert "sekret" not in str(info.value)
        assert info.value.__cause__ is not None
    assert time.monotonic() - start < 10
    assert "sekret" not in repr(queue)
    queue.close()


@pytest.mark.redis
def test_redis_recovers_after_the_stream_is_deleted(redis_url: str, redis_prefix: str) -> None:
    import redis

    from postroom.queue.redis import RedisQueue

    admin = redis.Redis.from_url(redis_url)
    with RedisQueue(redis_url, name=redis_prefix) as queue:
        queue.push([b"before"])
        queue.ack([i.tag for i in queue.take(10, timeout_s=1.0)])
        admin.delete(redis_prefix)
        assert queue.size() == 0
        queue.push([b"after"])
        assert [i.payload for i in queue.take(10, timeout_s=1.0)] == [b"after"]
        admin.xgroup_destroy(redis_prefix, "postroom")
        queue.push([b"again"])
        payloads = [i.payload for i in queue.take(10, timeout_s=1.0)]
        assert b"again" in payloads  # the recreated group starts at the stream's beginning
    admin.close()


@pytest.mark.redis
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_redis_forked_child_uses_its_own_connection(redis_url: str, redis_prefix: str) -> None:
    from postroom.queue.redis import RedisQueue

    with RedisQueue(redis_url, name=redis_prefix) as queue:
        queue.push([b"from-parent"])
        _push_in_forked_child(queue)
        assert [i.payload for i in queue.take(10, timeout_s=1.0)] == [
            b"from-parent",
            b"from-child",
        ]


@pytest.mark.redis
def test_redis_readers_see_a_pushed_batch_whole_or_not_at_all(
    redis_url: str, redis_prefix: str
) -> None:
    import redis

    from postroom.queue.redis import RedisQueue

    batch, batches = 100, 15
    admin = redis.Redis.from_url(redis_url)
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.add(int(admin.xlen(redis_prefix)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with RedisQueue(redis_url, name=redis_prefix) as queue:
            for n in range(batches):
                # ~100 kB per batch: far more than the server reads from a socket at once
                queue.push([b"%d-%d " % (n, i) + b"x" * 1000 for i in range(batch)])
    finally:
        done.set()
        watcher.join(10)
    seen.add(int(admin.xlen(redis_prefix)))
    admin.close()
    assert max(seen) == batch * batches
    assert {length % batch for length in seen} == {0}


@pytest.mark.redis
def test_redis_push_the_server_refuses_raises_and_stores_nothing(
    redis_url: str, redis_prefix: str
) -> None:
    import redis

    from postroom.queue.redis import RedisQueue

    admin = redis.Redis.from_url(redis_url)
    admin.set(redis_prefix, b"not a stream")
    queue = RedisQueue(redis_url, name=redis_prefix)
    with pytest.raises(QueueError, match=f"{redis_prefix}.*push failed.*WRONGTYPE"):
        queue.push([b"a", b"b"])
    assert admin.get(redis_prefix) == b"not a stream"
    queue.close()
    admin.close()


@pytest.mark.redis
def test_redis_push_loads_its_script_where_the_server_lacks_it(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    import redis

    from postroom.queue import redis as redis_engine

    # A variant of the script that no server has seen: the first EVALSHA gets NOSCRIPT.
    script = redis_engine._PUSH_SCRIPT + f"-- {redis_prefix}\n".encode()
    sha = hashlib.sha1(script).hexdigest()
    monkeypatch.setattr(redis_engine, "_PUSH_SCRIPT", script)
    monkeypatch.setattr(redis_engine, "_PUSH_SHA", sha)
    admin = redis.Redis.from_url(redis_url)
    assert admin.script_exists(sha) == [False]
    with redis_engine.RedisQueue(redis_url, name=redis_prefix) as queue:
        queue.push([b"one", b"two"])
        assert admin.script_exists(sha) == [True]
        queue.push([b"three"])
        assert [i.payload for i in queue.take(10, timeout_s=1.0)] == [b"one", b"two", b"three"]
    admin.close()


def test_redis_push_runs_one_script_per_8_mib_and_keeps_order() -> None:
    from postroom.queue.redis import _SCRIPT_MAX_BYTES, _parts

    small = [b"x" * 600] * 500
    assert [len(part) for part in _parts(small, _SCRIPT_MAX_BYTES)] == [500]  # the usual batch
    sizes = [3, 3, 9, 1, 2]
    payloads = [b"p" * n for n in sizes]
    parts = [[len(p) for p in part] for part in _parts(payloads, 5)]
    assert parts == [[3], [3], [9], [1, 2]]  # in order; the oversized payload runs alone


@pytest.mark.redis
def test_redis_push_of_a_batch_over_the_script_limit_stores_everything_in_order(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from postroom.queue import redis as redis_engine

    monkeypatch.setattr(redis_engine, "_SCRIPT_MAX_BYTES", 100)
    payloads = [b"%02d" % n + b"y" * 28 for n in range(10)] + [b"z" * 500]
    with redis_engine.RedisQueue(redis_url, name=redis_prefix) as queue:
        queue.push(payloads)
        assert [i.payload for i in queue.take(20, timeout_s=1.0)] == payloads


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.redis
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on PATH")
def test_redis_recovers_by_itself_after_a_server_restart() -> None:
    from postroom.queue.redis import RedisQueue

    port = _free_port()
    server = _start_redis(port)
    try:
        queue = RedisQueue(f"redis://127.0.0.1:{port}/0", name="restart")
        queue.push([b"one"])
        queue.ack([i.tag for i in queue.take(10, timeout_s=1.0)])
        _stop(server)
        with pytest.raises(QueueError):
            queue.take(10, timeout_s=0.1)
        server = _start_redis(port)  # empty: no persistence, the stream and group are gone
        queue.push([b"two"])  # the next call works without any help
        assert [i.payload for i in queue.take(10, timeout_s=1.0)] == [b"two"]
        queue.close()
    finally:
        _stop(server)


def test_sqlite_closed_engine_refuses_work(tmp_path: Path) -> None:
    queue = SqliteQueue(str(tmp_path / "q.db"))
    queue.push([b"x"])
    queue.close()
    with pytest.raises(QueueError, match="closed"):
        queue.take(1, timeout_s=0)


@pytest.mark.parametrize(
    ("url", "name"),
    [("http://127.0.0.1:6379/0", "q"), ("redis://", "q"), ("redis://127.0.0.1", "has space")],
)
def test_redis_refuses_bad_url_or_name(url: str, name: str) -> None:
    from postroom.queue.redis import RedisQueue

    with pytest.raises(ConfigError):
        RedisQueue(url, name=name)


def test_redis_default_consumer_names_host_and_process() -> None:
    from postroom.queue.redis import RedisQueue

    queue = RedisQueue("rediss://:pw@redis.example:6380/1", name="mail")  # no I/O until used
    assert queue.server == "redis.example:6380"
    assert queue.consumer.startswith(f"{socket.gethostname()}-{os.getpid()}-")
    assert RedisQueue("redis://h", consumer="worker-1").consumer == "worker-1"
    assert "pw" not in repr(queue)


@pytest.mark.redis
def test_redis_close_leaves_the_group_only_when_holding_nothing(
    redis_url: str, redis_prefix: str
) -> None:
    import redis

    from postroom.queue.redis import GROUP, RedisQueue

    admin = redis.Redis.from_url(redis_url)
    idle, busy = RedisQueue(redis_url, name=redis_prefix), RedisQueue(redis_url, name=redis_prefix)
    idle.push([b"x"])
    idle.ack([i.tag for i in idle.take(1, timeout_s=1.0)])
    busy.push([b"y"])
    assert [i.payload for i in busy.take(1, timeout_s=1.0)] == [b"y"]
    names_before = {c["name"].decode() for c in admin.xinfo_consumers(redis_prefix, GROUP)}
    assert {idle.consumer, busy.consumer} <= names_before
    idle_name, busy_name = idle.consumer, busy.consumer
    idle.close()
    busy.close()
    names = {c["name"].decode() for c in admin.xinfo_consumers(redis_prefix, GROUP)}
    assert idle_name not in names
    assert busy_name in names  # its un-acked entry stays, to be claimed by another consumer
    admin.close()


@pytest.mark.redis
@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_works_with_either_protocol(redis_url: str, redis_prefix: str, protocol: int) -> None:
    from postroom.queue.redis import RedisQueue

    sep = "&" if "?" in redis_url else "?"
    with RedisQueue(f"{redis_url}{sep}protocol={protocol}", name=redis_prefix) as queue:
        queue.push([b"a", b"b"])
        items = queue.take(10, timeout_s=1.0)
        assert [i.payload for i in items] == [b"a", b"b"]
        queue.ack([i.tag for i in items])
        assert queue.take(10, timeout_s=0.05) == []
        assert queue.size() == 0


def _dead_consumer_holds(admin: redis.Redis, stream: str, junk: int, real: list[bytes]) -> None:
    """A consumer that read ``junk`` entries without a payload field, then ``real`` payloads,
    and died without acknowledging any of them."""
    admin.xgroup_create(stream, "postroom", id="0", mkstream=True)
    pipe = admin.pipeline(transaction=False)
    for i in range(junk):
        pipe.xadd(stream, {b"other": str(i).encode()})
    for payload in real:
        pipe.xadd(stream, {b"p": payload})
    pipe.execute()
    admin.xreadgroup("postroom", "dead-consumer", {stream: ">"}, count=junk + len(real))
    assert admin.xpending(stream, "postroom")["pending"] == junk + len(real)


@pytest.mark.redis
def test_redis_reclaim_reaches_real_entries_behind_a_head_of_junk(
    redis_url: str, redis_prefix: str
) -> None:
    import redis

    from postroom.queue.redis import GROUP, RedisQueue

    admin = redis.Redis.from_url(redis_url)
    real = [f"real {i}".encode() for i in range(5)]
    _dead_consumer_holds(admin, redis_prefix, 200, real)
    time.sleep(0.25)  # the dead consumer's entries are idle longer than redeliver_after_s
    reclaimed: list[Taken] = []
    with RedisQueue(redis_url, name=redis_prefix, redeliver_after_s=0.2) as queue:
        deadline = time.monotonic() + 10
        while len(reclaimed) < len(real) and time.monotonic() < deadline:
            reclaimed += queue.take(10, timeout_s=0.5)
        assert sorted(t.payload for t in reclaimed) == real
        assert all(t.deliveries == 2 for t in reclaimed)
        queue.ack([t.tag for t in reclaimed])
        assert admin.xpending(redis_prefix, GROUP)["pending"] == 0  # the junk is acknowledged
        assert queue.size() == 0  # and deleted
    admin.close()


@pytest.mark.redis
def test_redis_new_entries_without_a_payload_are_acknowledged_and_deleted(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    from postroom.queue.redis import GROUP, RedisQueue

    admin = redis.Redis.from_url(redis_url)
    with RedisQueue(redis_url, name=redis_prefix) as queue:
        queue.push([b"first"])
        admin.xadd(redis_prefix, {b"other": b"x"})
        queue.push([b"second"])
        admin.xadd(redis_prefix, {b"other": b"y"})
        with caplog.at_level("DEBUG", logger="postroom.queue"):
            items = queue.take(10, timeout_s=1.0)
            items += queue.take(10, timeout_s=0.1)
        assert [t.payload for t in items] == [b"first", b"second"]
        assert admin.xpending(redis_prefix, GROUP)["pending"] == 2  # only the two handed out
        assert queue.size() == 2
        queue.ack([t.tag for t in items])
        assert queue.size() == 0
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "without a payload field" in warnings[0].getMessage()
    admin.close()


@pytest.mark.redis
def test_redis_reclaim_starts_again_from_the_head_after_a_full_pass(
    redis_url: str, redis_prefix: str
) -> None:
    from postroom.queue.redis import RedisQueue

    with RedisQueue(redis_url, name=redis_prefix, redeliver_after_s=0.1) as queue:
        queue.push([b"a", b"b", b"c"])
        assert len(queue.take(10, timeout_s=1.0)) == 3  # taken and never acknowledged
        deliveries: dict[bytes, int] = {}
        deadline = time.monotonic() + 10
        while min(deliveries.values(), default=0) < 3 and time.monotonic() < deadline:
            for item in queue.take(1, timeout_s=0.3):  # one per step: a pass takes several
                deliveries[item.payload] = max(deliveries.get(item.payload, 0), item.deliveries)
        assert set(deliveries) == {b"a", b"b", b"c"}
        assert min(deliveries.values()) >= 3  # each one reclaimed in two passes at least
