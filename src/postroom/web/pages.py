"""The HTML pages: overview, message search, one message, the dev mailbox, the login form.

Templates are Jinja2 with autoescaping on, so every subject, name and header is shown as text.
Blocking database work runs in Starlette's thread pool.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from postroom.errors import NotFoundError, StoreError
from postroom.store.records import STATUSES
from postroom.web import views
from postroom.web.context import WebContext
from postroom.web.forms import BadInput, position_text, search_query
from postroom.web.mail import parse_mail
from postroom.web.security import CSRF_FIELD, SESSION_COOKIE, csrf_ok

__all__ = ["render"]

_ENV = Environment(
    loader=PackageLoader("postroom.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["time"] = lambda value: views.fmt_time(value)
_ENV.filters["age"] = lambda seconds: views.fmt_age(seconds)
_ENV.filters["size"] = lambda n: views.fmt_size(n)


def ctx_of(request: Request) -> WebContext:
    context: WebContext = request.app.state.ctx
    return context


def render(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """A page from ``template``; every page gets the CSRF value and whether --dev is on."""
    context = ctx_of(request)
    html = _ENV.get_template(template).render(
        csrf=request.state.csrf,
        csrf_field=CSRF_FIELD,
        dev=context.mailbox is not None,
        signed_in=bool(request.cookies.get(SESSION_COOKIE)),
        token_required=bool(context.access.token),
        **values,
    )
    return HTMLResponse(html, status_code=status_code)


async def overview(request: Request) -> Response:
    context = ctx_of(request)
    figures = await run_in_threadpool(context.browser.overview, context.now())
    return render(
        request,
        "overview.html",
        title="Overview",
        o=figures,
        charts=views.overview_charts(figures),
        dead_after_s=context.dead_after_s,
        mailbox_count=context.mailbox.count() if context.mailbox else None,
    )


async def message_list(request: Request) -> Response:
    context = ctx_of(request)
    params = dict(request.query_params)
    try:
        query = search_query(params, context.now())
    except BadInput as exc:
        return render(
            request,
            "messages.html",
            400,
            title="Messages",
            error=str(exc),
            params=params,
            statuses=STATUSES,
            page=None,
        )
    page = await run_in_threadpool(context.browser.search, query)
    links = {}
    for name, position in (("next", page.next), ("older", page.older)):
        if position is not None:
            links[name] = "?" + urlencode(params | {"before": position_text(position)})
    return render(
        request,
        "messages.html",
        title="Messages",
        params=params,
        statuses=STATUSES,
        page=page,
        links=links,
        error=None,
    )


async def message_page(request: Request) -> Response:
    context = ctx_of(request)
    message_id = request.path_params["id"]
    try:
        info, tries, payload = await run_in_threadpool(views.load_message, context, message_id)
    except (NotFoundError, KeyError):
        return render(
            request,
            "error.html",
            404,
            title="Not found",
            problem=f"no message with id {message_id}",
        )
    raw, problem = views.rendered(payload)
    mail = parse_mail(raw) if raw is not None else None
    return render(
        request,
        "message.html",
        title=info.subject or "(no subject)",
        m=info,
        attempts=tries,
        mail=mail,
        render_problem=problem,
        outcomes=views.recipient_outcomes(info, tries),
        can_cancel=info.status == "queued",
        can_retry=info.status in ("failed", "expired"),
        notice=request.query_params.get("notice", ""),
        base=f"/messages/{message_id}",
    )


async def message_part(request: Request) -> Response:
    """``raw``, ``preview`` and ``attachments/{n}`` of one stored message."""
    context = ctx_of(request)
    message_id = request.path_params["id"]
    try:
        payload = await run_in_threadpool(context.payload, message_id)
    except KeyError:
        return Response("no such message", 404, media_type="text/plain")
    raw, _problem = views.rendered(payload)
    return views.part_response(request, raw if raw is not None else payload, f"{message_id}.eml")


async def message_action(request: Request) -> Response:
    context = ctx_of(request)
    message_id, action = request.path_params["id"], request.path_params["action"]
    form = await request.form()
    if not csrf_ok(request, context.access, str(form.get(CSRF_FIELD, ""))):
        return _stale_form(request)
    try:
        notice = await run_in_threadpool(views.act, context, message_id, action)
    except NotFoundError:
        return render(
            request,
            "error.html",
            404,
            title="Not found",
            problem=f"no message with id {message_id}",
        )
    except StoreError as exc:
        notice = str(exc)
    query = urlencode({"notice": notice})
    return RedirectResponse(f"/messages/{message_id}?{query}", status_code=303)


async def mailbox_list(request: Request) -> Response:
    mailbox = ctx_of(request).mailbox
    if mailbox is None:
        return _no_mailbox(request)
    items = await run_in_threadpool(mailbox.list)
    return render(request, "mailbox.html", title="Mailbox", items=items, folder=mailbox.folder)


async def mailbox_message(request: Request) -> Response:
    mailbox = ctx_of(request).mailbox
    if mailbox is None:
        return _no_mailbox(request)
    name = request.path_params["name"]
    try:
        raw = await run_in_threadpool(mailbox.read, name)
    except KeyError:
        return render(request, "error.html", 404, title="Not found", problem="no such message")
    return render(
        request,
        "captured.html",
        title="Captured message",
        name=name,
        mail=parse_mail(raw),
        base=f"/mailbox/{name}",
    )


async def mailbox_part(request: Request) -> Response:
    mailbox = ctx_of(request).mailbox
    if mailbox is None:
        return _no_mailbox(request)
    name = request.path_params["name"]
    try:
        raw = await run_in_threadpool(mailbox.read, name)
    except KeyError:
        return Response("no such message", 404, media_type="text/plain")
    return views.part_response(request, raw, name)


async def mailbox_delete_all(request: Request) -> Response:
    context = ctx_of(request)
    if context.mailbox is None:
        return _no_mailbox(request)
    form = await request.form()
    if not csrf_ok(request, context.access, str(form.get(CSRF_FIELD, ""))):
        return _stale_form(request)
    await run_in_threadpool(context.mailbox.delete_all)
    return RedirectResponse("/mailbox", status_code=303)


def _stale_form(request: Request) -> Response:
    """A POST whose CSRF value does not match: refused, with what to do."""
    problem = "the form is stale or came from another site: reload the page"
    return render(request, "error.html", 403, title="Refused", problem=problem)


async def login_form(request: Request) -> Response:
    return render(request, "login.html", title="Sign in", next=_safe_next(request), error=None)


async def login(request: Request) -> Response:
    context = ctx_of(request)
    form = await request.form()
    target = _safe_next(request, str(form.get("next", "/")))
    if not csrf_ok(request, context.access, str(form.get(CSRF_FIELD, ""))):
        return render(
            request,
            "login.html",
            403,
            title="Sign in",
            next=target,
            error="the form is stale: reload the page and try again",
        )
    if not context.access.token_matches(str(form.get("token", ""))):
        return render(
            request, "login.html", 401, title="Sign in", next=target, error="that is not the token"
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, context.access.session_value(), httponly=True, samesite="strict"
    )
    return response


async def logout(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, ctx_of(request).access, str(form.get(CSRF_FIELD, ""))):
        return Response("refused", 403, media_type="text/plain")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def _safe_next(request: Request, given: str | None = None) -> str:
    """Where to go after signing in: a path of this site only, never another site."""
    target = given if given is not None else request.query_params.get("next", "/")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _no_mailbox(request: Request) -> Response:
    return render(
        request,
        "error.html",
        404,
        title="No mailbox",
        problem="the dev mailbox is shown only under `postroom serve --dev`",
    )


def marked(svg: str) -> Markup:
    """An SVG chart drawn by :mod:`postroom.web.charts` (which escapes every label)."""
    return Markup(svg)


_ENV.filters["svg"] = marked
