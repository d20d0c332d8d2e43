"""Queueing from asyncio code (FastAPI, Starlette, aiohttp) without blocking the event loop.

``await e.aenqueue()`` first tries to put the email on the buffer without waiting, in the
loop's thread (validating and snapshotting an email is CPU work of some microseconds, like any
other line of a handler). Only when the buffer is full does it wait, and then in a worker
thread, so the loop goes on serving other requests meanwhile; after ``email.enqueue-timeout``
it raises :class:`~postroom.errors.BufferFullError` as ``enqueue()`` does.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import postroom.client
from postroom.errors import BufferFullError

if TYPE_CHECKING:
    from postroom.client.outbox import Outbox, Submittable

__all__ = ["aflush", "asubmit"]


async def asubmit(
    email: Submittable,
    *,
    send_after: datetime | None = None,
    outbox: Outbox | None = None,
    idempotency_key: str | None = None,
) -> str:
    """:func:`postroom.client.submit` for coroutines: never blocks the event loop."""
    try:
        return postroom.client.submit(
            email,
            send_after=send_after,
            outbox=outbox,
            idempotency_key=idempotency_key,
            timeout_s=0,
        )
    except BufferFullError:
        pass  # wait for room in a worker thread, not in the loop
    import asyncio  # imported on first use: importing postroom stays cheap

    return await asyncio.to_thread(
        postroom.client.submit,
        email,
        send_after=send_after,
        outbox=outbox,
        idempotency_key=idempotency_key,
    )


async def aflush(timeout: float | None = None, *, outbox: Outbox | None = None) -> int:
    """Wait, in a worker thread, until the buffer is pushed; return how many emails are left.

    ``outbox`` defaults to the process-wide one; ``timeout`` to its ``email.flush-timeout``.
    """
    import asyncio

    if outbox is None:
        return await asyncio.to_thread(postroom.client.flush, timeout)
    return await asyncio.to_thread(outbox.flush, timeout)
