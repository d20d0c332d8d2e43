"""The dashboard as an ASGI application (Starlette): pages, JSON API, metrics, health.

>>> app = create_app(load_config(None))           # serve it with any ASGI server
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from postroom.config import Config
from postroom.errors import StoreError
from postroom.store import open_store
from postroom.store.browse import Browser
from postroom.web import api, pages
from postroom.web.context import WebContext, utc_now
from postroom.web.mailbox import Mailbox
from postroom.web.metrics import DatabaseCollector, render_metrics
from postroom.web.security import Access, SecurityMiddleware

__all__ = ["create_app"]

_PARTS = ("raw", "download", "preview")
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def create_app(
    config: Config,
    *,
    mailbox_dir: Path | None = None,
    now: Callable[[], datetime] = utc_now,
) -> Starlette:
    """The dashboard for the database of ``config``; ``mailbox_dir`` shows a dev mailbox too.

    The store is opened here and closed when the application shuts down.
    """
    store = open_store(config.email.server.database.sqlalchemy_url(), pool_size=4)
    browser = Browser(store)
    heartbeat = config.email.server.heartbeat
    context = WebContext(
        store=store,
        browser=browser,
        access=Access(config.email.web.token.reveal()),
        max_time=config.email.server.max_time,
        heartbeat=heartbeat,
        collector=DatabaseCollector(browser, now, dead_after_s=5 * heartbeat.total_seconds()),
        mailbox=Mailbox(mailbox_dir) if mailbox_dir is not None else None,
        now=now,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.close()

    app = Starlette(
        routes=_routes(),
        middleware=[Middleware(SecurityMiddleware, access=context.access)],
        lifespan=lifespan,
        exception_handlers={StoreError: _database_unavailable},
    )
    app.state.ctx = context
    return app


def _routes() -> list[Route | Mount]:
    static = StaticFiles(packages=[("postroom.web", "static")])
    return [
        Route("/", pages.overview),
        Route("/messages", pages.message_list),
        Route("/messages/{id}", pages.message_page),
        *(Route(f"/messages/{{id}}/{kind}", pages.message_part) for kind in _PARTS),
        Route("/messages/{id}/attachments/{n:int}", pages.message_part),
        Route("/messages/{id}/{action}", pages.message_action, methods=["POST"]),
        Route("/mailbox", pages.mailbox_list),
        Route("/mailbox/delete-all", pages.mailbox_delete_all, methods=["POST"]),
        Route("/mailbox/{name}", pages.mailbox_message),
        *(Route(f"/mailbox/{{name}}/{kind}", pages.mailbox_part) for kind in _PARTS),
        Route("/mailbox/{name}/attachments/{n:int}", pages.mailbox_part),
        Route("/login", pages.login_form),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/api/messages", api.messages),
        Route("/api/messages/{id}", api.message),
        Route("/api/messages/{id}/{action}", api.cancel_or_retry, methods=["POST"]),
        Route("/api/stats", api.stats),
        Route("/api/csrf", api.csrf),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount("/static", static, name="static"),
    ]


async def metrics(request: Request) -> Response:
    context: WebContext = request.app.state.ctx
    body = await run_in_threadpool(render_metrics, context.collector)
    return Response(body, media_type=METRICS_TYPE)


async def healthz(request: Request) -> Response:
    """The web process answers."""
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    """The database answers with the current schema; with ``?dispatchers=N``, also at least N
    dispatchers have a recent heartbeat (their ingest and dispatch are alive)."""
    context: WebContext = request.app.state.ctx
    wanted_text = request.query_params.get("dispatchers", "0")
    if not wanted_text.isdigit():
        return JSONResponse({"ready": False, "error": "dispatchers: expected a number"}, 400)
    try:
        problem = await run_in_threadpool(context.browser.schema_problem)
        found = [] if problem else await run_in_threadpool(context.browser.dispatchers)
    except StoreError as exc:
        problem, found = str(exc), []
    now = context.now()
    alive = [d for d in found if (now - d.heartbeat_at).total_seconds() <= context.dead_after_s]
    body: dict[str, object] = {
        "ready": problem is None and len(alive) >= int(wanted_text),
        "database": "ok" if problem is None else problem,
        "dispatchers_alive": len(alive),
        "dispatchers": [
            {
                "id": d.id,
                "host": d.host,
                "heartbeat_age_s": round((now - d.heartbeat_at).total_seconds(), 3),
                "alive": d in alive,
                "relay": "up" if d.relay_down_since is None else f"down: {d.relay_failure}",
            }
            for d in found
        ],
    }
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    """A database error: say whether the schema is missing (no `postroom serve` yet) or why
    the database did not answer."""
    context: WebContext = request.app.state.ctx
    try:
        problem = await run_in_threadpool(context.browser.schema_problem) or str(exc)
    except StoreError:
        problem = str(exc)
    if request.url.path.startswith(("/api/", "/metrics")):
        return JSONResponse({"error": problem}, status_code=503)
    return pages.render(request, "error.html", 503, title="Database unavailable", problem=problem)
