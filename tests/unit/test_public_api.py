"""The top-level namespace is the public contract: sorted, complete, importable."""

from __future__ import annotations

import subprocess
import sys

import postroom
from postroom import errors


def test_all_is_sorted_and_every_name_exists() -> None:
    assert postroom.__all__ == sorted(postroom.__all__)
    for name in postroom.__all__:
        assert hasattr(postroom, name), name


def test_every_error_is_exported_and_derives_from_the_root() -> None:
    for name in errors.__all__:
        assert name in postroom.__all__
        assert issubclass(getattr(errors, name), postroom.PostroomError)


def test_delivery_outcomes_are_results_not_exceptions() -> None:
    # a transport reports every outcome as a DeliveryResult; no exception family pretends
    # otherwise
    assert not hasattr(postroom, "DeliveryError")
    assert "DeliveryResult" not in errors.__all__


def test_there_is_no_synchronous_send() -> None:
    e = postroom.Email(from_="a@example.com", to="b@example.com", subject="s", text="t")
    try:
        e.send()  # type: ignore[attr-defined]
    except AttributeError as exc:
        message = str(exc)
    else:  # pragma: no cover - the assertion below reports it
        message = ""
    assert "enqueue()" in message and "send_later(" in message and "send_at(" in message


def test_import_has_no_side_effects(tmp_path: object) -> None:
    code = (
        "import os, threading, postroom;"
        "assert threading.active_count() == 1, threading.enumerate();"
        "assert not os.path.exists('.postroom'), 'import touched the disk'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), check=True)
