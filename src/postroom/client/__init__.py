"""The application side of postroom: validate, buffer and push emails to the queue engine.

``Email.enqueue()`` ends in :func:`submit`, which returns the message id at once; a background
thread pushes the buffer to the configured queue engine. :func:`configure` and :func:`flush`
act on the process-wide outbox; :class:`Outbox` is an explicit one for applications that want
their own.
"""

from __future__ import annotations

from postroom.client.default import configure, default_outbox, flush, submit
from postroom.client.outbox import MAX_BATCH, Outbox, Submittable

__all__ = [
    "MAX_BATCH",
    "Outbox",
    "Submittable",
    "configure",
    "default_outbox",
    "flush",
    "submit",
]
