"""Flask: ``Postroom(app)``, or ``postroom_ext = Postroom()`` and ``init_app(app)`` in an
application factory.

The configuration comes from ``app.config["POSTROOM"]``: a dict shaped like the YAML file
(``{"email": {...}}``) or the path of one; without it, postroom's default lookup
(``$POSTROOM_CONFIG``, ``./postroom.yaml``, the embedded SQLite default). ``init_app`` checks
it at once (a bad key raises :class:`~postroom.errors.ConfigError` naming it) and makes it the
configuration of the process-wide outbox, so handlers simply call ``Email(...).enqueue()``.
One configuration per process: a second ``init_app`` with another configuration replaces the
first (flushing what the first buffered). The outbox is flushed when the process exits, for up
to ``email.flush-timeout``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import postroom.client

if TYPE_CHECKING:
    from flask import Flask

    from postroom.client import Outbox
    from postroom.config import Config

__all__ = ["Postroom"]


class Postroom:
    """The Flask extension; ``app.extensions["postroom"]`` is this object.

    >>> app = Flask(__name__)  # doctest: +SKIP
    >>> app.config["POSTROOM"] = {"email": {"queue": {"default": {"engine": "redis"}}}}
    >>> Postroom(app)
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.config: Config | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Configure postroom from ``app.config["POSTROOM"]`` and register the extension."""
        self.config = postroom.client.configure(app.config.get("POSTROOM"))
        app.extensions["postroom"] = self

    @property
    def outbox(self) -> Outbox:
        """The process-wide outbox the handlers' ``enqueue()`` calls use."""
        return postroom.client.default_outbox()

    def flush(self, timeout: float | None = None) -> int:
        """Wait until everything queued so far is pushed; return how many are left."""
        return postroom.client.flush(timeout)
