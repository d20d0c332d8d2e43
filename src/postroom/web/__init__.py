"""The dashboard: overview, message search, the dev mailbox, a JSON API, Prometheus metrics
and health checks, over the database the dispatchers write (``postroom web``).

Needs the ``web`` extra (``pip install 'postroom[web]'``): Starlette, uvicorn, Jinja2 and
prometheus_client. See :mod:`postroom.web.security` for who may use it.
"""

from __future__ import annotations

from postroom.web.app import create_app
from postroom.web.server import listen_address, run_web, start_in_background

__all__ = ["create_app", "listen_address", "run_web", "start_in_background"]
