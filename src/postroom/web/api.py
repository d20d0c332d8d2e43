"""The JSON API under ``/api/``: search, one message, stats, cancel, retry.

Times are ISO 8601 in UTC. Errors are ``{"error": "..."}`` with status 400 (bad input), 401
(token), 403 (CSRF), 404 (no such message) or 409 (the message's state forbids the action).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from postroom.errors import NotFoundError, StoreError
from postroom.store.browse import Overview
from postroom.store.search import MessageSummary
from postroom.web import views
from postroom.web.context import WebContext
from postroom.web.forms import BadInput, position_text, search_query
from postroom.web.mail import parse_mail
from postroom.web.security import csrf_ok

__all__ = ["cancel_or_retry", "csrf", "message", "messages", "stats"]


def _ctx(request: Request) -> WebContext:
    context: WebContext = request.app.state.ctx
    return context


def _error(problem: str, status_code: int) -> JSONResponse:
    return JSONResponse({"error": problem}, status_code=status_code)


def _plain(value: Any) -> Any:
    """Dataclasses, datetimes and tuples as JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


async def messages(request: Request) -> Response:
    """``GET /api/messages?q=&from=&to=&subject=&status=&since=&until=&before=&limit=``."""
    context = _ctx(request)
    try:
        query = search_query(request.query_params, context.now())
    except BadInput as exc:
        return _error(str(exc), 400)
    page = await run_in_threadpool(context.browser.search, query)
    rows: list[MessageSummary] = page.rows
    return JSONResponse(
        {
            "messages": _plain(rows),
            "next": position_text(page.next) if page.next else None,
            "older": position_text(page.older) if page.older else None,
            "scanned_back_to": _plain(page.scanned_back_to),
        }
    )


async def message(request: Request) -> Response:
    """``GET /api/messages/{id}``: the row, its attempts, each recipient's outcome, headers."""
    context = _ctx(request)
    message_id = request.path_params["id"]
    try:
        info, tries, payload = await run_in_threadpool(views.load_message, context, message_id)
    except (NotFoundError, KeyError):
        return _error(f"no message with id {message_id}", 404)
    raw, problem = views.rendered(payload)
    mail = parse_mail(raw) if raw is not None else None
    return JSONResponse(
        {
            "message": _plain(info),
            "attempts": _plain(tries),
            "recipients": _plain(views.recipient_outcomes(info, tries)),
            "headers": [list(h) for h in mail.headers] if mail else [],
            "attachments": [
                {
                    "index": a.index,
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": a.size,
                }
                for a in (mail.attachments if mail else [])
            ],
            "render_problem": problem,
        }
    )


async def stats(request: Request) -> Response:
    """``GET /api/stats``: the overview's figures."""
    context = _ctx(request)
    figures: Overview = await run_in_threadpool(context.browser.overview, context.now())
    body = _plain(figures)
    body["top_failures"] = [{"failure": f, "count": n} for f, n in figures.top_failures]
    return JSONResponse(body)


async def cancel_or_retry(request: Request) -> Response:
    """``POST /api/messages/{id}/cancel`` and ``.../retry``."""
    context = _ctx(request)
    if not csrf_ok(request, context.access, None):
        return _error("missing or wrong X-CSRF-Token header (or use the token header)", 403)
    message_id, action = request.path_params["id"], request.path_params["action"]
    try:
        done = await run_in_threadpool(views.act, context, message_id, action)
    except NotFoundError:
        return _error(f"no message with id {message_id}", 404)
    except StoreError as exc:
        return _error(str(exc), 409)
    return JSONResponse({"id": message_id, "result": done})


async def csrf(request: Request) -> Response:
    """``GET /api/csrf``: the CSRF value (also set as the cookie) for scripted POSTs."""
    return JSONResponse({"csrf_token": request.state.csrf})
