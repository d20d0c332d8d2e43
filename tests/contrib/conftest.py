"""Django is configured once for the tests in this folder, from ``django_settings``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")
from django.conf import settings  # noqa: E402

from tests.contrib import django_settings  # noqa: E402
from tests.contrib.django_compat import backend_settings  # noqa: E402

if not settings.configured:
    values = {name: getattr(django_settings, name) for name in dir(django_settings)}
    settings.configure(
        **{name: value for name, value in values.items() if name.isupper()}, **backend_settings()
    )
    django.setup()


@pytest.fixture
def postroom_settings(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``settings.POSTROOM`` pointing at a SQLite queue and database in ``tmp_path``."""
    from django.test import override_settings

    config: dict[str, Any] = {
        "email": {
            "queue": {"default": {"engine": "sqlite", "path": str(tmp_path / "queue.db")}},
            "server": {"database": {"engine": "sqlite3", "path": str(tmp_path / "postroom.db")}},
        }
    }
    with override_settings(POSTROOM=config):
        yield config


@pytest.fixture(autouse=True)
def _fresh_default_outbox() -> Iterator[None]:
    """Each test starts and ends without a process-wide outbox configured from settings."""
    yield
    import postroom.client.default as default
    from postroom.contrib.django import backend

    outbox, default._outbox = default._outbox, None
    backend._configured_from = None
    backend._last_seen = None
    if outbox is not None:
        outbox.close()
