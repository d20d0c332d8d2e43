"""The measuring half of ``bench_django.py``; runs in the benchmark's own environment and
prints one JSON row per measurement. Not a benchmark on its own: ``run_all.py`` runs
``bench_django``, which starts it."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import django
from django.conf import settings

POSTROOM = "postroom.contrib.django.EmailBackend"
POST_OFFICE = "post_office.EmailBackend"


def configure(with_post_office: bool) -> None:
    folder = Path.cwd()
    apps = ["django.contrib.contenttypes", "django.contrib.auth"]
    settings.configure(
        SECRET_KEY="bench",
        USE_TZ=True,
        INSTALLED_APPS=[*apps, "post_office"] if with_post_office else apps,
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(folder / "db.sqlite")}
        },
        EMAIL_BACKEND=POSTROOM,
        DEFAULT_FROM_EMAIL="shop@example.com",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver"],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
        POSTROOM={
            "email": {
                "buffer": 5000,
                "queue": {"default": {"engine": "sqlite", "path": str(folder / "queue.db")}},
            }
        },
        POST_OFFICE={"DEFAULT_PRIORITY": "medium", "MESSAGE_ID_ENABLED": True},
    )
    django.setup()
    if with_post_office:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


# -- the view ---------------------------------------------------------------------------------

SPENT_S: list[float] = []


def signup(request: object) -> object:
    from django.core.mail import send_mail
    from django.http import HttpResponse

    started = time.perf_counter()
    send_mail("Welcome", "Thanks for signing up.", None, ["ana@example.org"])
    SPENT_S.append(time.perf_counter() - started)
    return HttpResponse("ok")


def _urls() -> list[object]:
    from django.urls import path

    return [path("signup", signup)]


# -- measurements -----------------------------------------------------------------------------


def flush_postroom(backend: str) -> None:
    if backend == POSTROOM:
        import postroom

        assert postroom.flush(60) == 0


def rate(backend: str, emails: int, send: Callable[[int], None]) -> dict[str, object]:
    from django.test import override_settings

    with override_settings(EMAIL_BACKEND=backend):
        send(50)  # warm-up: connections, caches, the queue file
        flush_postroom(backend)
        started = time.perf_counter()
        send(emails)
        flush_postroom(backend)
        elapsed_s = time.perf_counter() - started
    return {"emails": emails, "per_s": round(emails / elapsed_s)}


def mass(count: int) -> None:
    from django.core.mail import send_mass_mail

    datatuple = [(f"Order {n}", "Thanks", None, [f"c{n}@example.org"]) for n in range(count)]
    send_mass_mail(datatuple)


def loop(count: int) -> None:
    from django.core.mail import EmailMessage

    for n in range(count):
        EmailMessage(f"Order {n}", "Thanks", None, [f"c{n}@example.org"]).send()


def po_send_many(count: int) -> None:
    from post_office import mail

    mail.send_many(
        [
            {
                "sender": "shop@example.com",
                "recipients": [f"c{n}@example.org"],
                "subject": f"Order {n}",
                "message": "Thanks",
            }
            for n in range(count)
        ]
    )


def po_mail_send(count: int) -> None:
    from post_office import mail

    for n in range(count):
        mail.send(f"c{n}@example.org", "shop@example.com", subject=f"Order {n}", message="Thanks")


def view_latency(backend: str, requests: int) -> dict[str, object]:
    from django.test import Client, override_settings

    client = Client()
    with override_settings(EMAIL_BACKEND=backend):
        for _ in range(50):  # warm-up
            client.get("/signup")
        SPENT_S.clear()
        for _ in range(requests):
            assert client.get("/signup").status_code == 200
        flush_postroom(backend)
    spent_us = sorted(s * 1e6 for s in SPENT_S)
    p99 = spent_us[min(len(spent_us) - 1, int(len(spent_us) * 0.99))]
    return {
        "requests": requests,
        "median_us": round(statistics.median(spent_us)),
        "p99_us": round(p99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--postroom-only", action="store_true")
    args = parser.parse_args()
    configure(with_post_office=not args.postroom_only)
    globals()["urlpatterns"] = _urls()
    backends = {"postroom": POSTROOM}
    if not args.postroom_only:
        backends["post_office"] = POST_OFFICE
    rows: list[dict[str, object]] = []
    for name, backend in backends.items():
        rows.append(
            {"backend": name, "benchmark": "send_mass_mail", **rate(backend, args.emails, mass)}
        )
        rows.append(
            {"backend": name, "benchmark": "message_send", **rate(backend, args.emails, loop)}
        )
        rows.append(
            {"backend": name, "benchmark": "view_send_mail", **view_latency(backend, args.requests)}
        )
    if not args.postroom_only:
        rows.append(
            {
                "backend": "post_office",
                "benchmark": "po_send_many",
                **rate(POST_OFFICE, args.emails, po_send_many),
            }
        )
        rows.append(
            {
                "backend": "post_office",
                "benchmark": "po_mail_send",
                **rate(POST_OFFICE, args.emails, po_mail_send),
            }
        )
    else:
        rows.append(
            {"backend": "post_office", "skipped": "django-post_office could not be installed"}
        )
    for row in rows:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
