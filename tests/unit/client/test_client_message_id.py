"""Message ids: the ULID layout that the enqueue hot path produces."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from postroom.payload import _CROCKFORD, new_message_id


def _from_base32(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + _CROCKFORD.index(char)
    return value


def test_ids_are_26_crockford_digits_with_the_time_in_the_top_48_bits() -> None:
    before_ms = time.time_ns() // 1_000_000
    message_id = new_message_id()
    after_ms = time.time_ns() // 1_000_000
    assert len(message_id) == 26
    assert set(message_id) <= set(_CROCKFORD)
    assert message_id[0] in "01234567"  # 130 digits' worth of bits hold a 128-bit value
    assert before_ms <= _from_base32(message_id) >> 80 <= after_ms


def test_ids_are_unique_and_sort_by_creation_time() -> None:
    ids = [new_message_id() for _ in range(2000)]
    assert len(set(ids)) == 2000
    stamps = [_from_base32(i) >> 80 for i in ids]
    assert stamps == sorted(stamps)
    assert len({i[10:] for i in ids}) == 2000  # the random part differs, too


def test_every_digit_of_the_random_part_is_drawn_from_all_32() -> None:
    ids = [new_message_id() for _ in range(1000)]
    for position in range(10, 26):
        assert {i[position] for i in ids} == set(_CROCKFORD)


@pytest.mark.parametrize(
    "fork",
    [
        "os.fork()",
        # straight from C, skipping Python's at-fork hooks, as uWSGI does by default
        "__import__('ctypes').PyDLL(None).fork()",
    ],
)
def test_a_forked_child_never_reuses_the_parents_random_bits(fork: str) -> None:
    code = (
        "import os\n"
        "from postroom.payload import new_message_id\n"
        "new_message_id()  # the parent now holds a stock of random numbers\n"
        "read, write = os.pipe()\n"
        f"pid = {fork}\n"
        "ids = [new_message_id() for _ in range(100)]\n"
        "if pid == 0:\n"
        "    os.write(write, ' '.join(ids).encode())\n"
        "    os._exit(0)\n"
        "os.close(write)\n"
        "os.waitpid(pid, 0)\n"
        "child = os.read(read, 100_000).decode().split()\n"
        "print(' '.join(ids))\n"
        "print(' '.join(child))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    parent_line, child_line = done.stdout.splitlines()
    parent_random = {i[10:] for i in parent_line.split()}
    child_random = {i[10:] for i in child_line.split()}
    assert len(parent_random) == len(child_random) == 100
    assert not parent_random & child_random
