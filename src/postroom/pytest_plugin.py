"""The pytest plugin installed with postroom (entry point ``pytest11``).

It only adds the ``postroom_outbox`` fixture; a test that does not ask for it runs exactly as
without the plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from postroom.testing import Capture

__all__ = ["postroom_outbox"]


@pytest.fixture
def postroom_outbox() -> Iterator[Capture]:
    """Every email the test queues, captured instead of queued (:mod:`postroom.testing`).

    >>> def test_welcome(postroom_outbox):  # doctest: +SKIP
    ...     signup("ana@example.org")
    ...     assert postroom_outbox.assert_sent(to="ana@example.org").subject == "Welcome"
    """
    from postroom.testing import capture

    with capture() as captured:
        yield captured
