"""The django-post_office half of ``bench_sink.py``; runs in the benchmark's own environment
(``bench_django.bench_env()``) and prints one JSON row. Not a benchmark on its own.

Django is configured as the smallest project that uses post_office: SQLite database in the
current folder, ``EMAIL_BACKEND = "post_office.EmailBackend"``, no ``POST_OFFICE`` setting (every
post_office default), so post_office delivers through Django's SMTP backend, pointed at the sink.
The emails are queued with ``mail.send_many`` (not timed), then ``send_queued_mail`` is timed with
its defaults until it returns, which it does once nothing is left in the queue.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib.metadata import version
from pathlib import Path

import django
from django.conf import settings

SUBJECT = "Benchmark message {}"
TEXT = "Hello,\n\nthis is a small benchmark email.\n"
HTML = "<p>Hello,</p><p>this is a small benchmark email.</p>"


def configure(port: int) -> None:
    settings.configure(
        SECRET_KEY="bench",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "post_office"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(Path.cwd() / "db.sqlite"),
            }
        },
        EMAIL_BACKEND="post_office.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=port,
        DEFAULT_FROM_EMAIL="Bench <bench@example.com>",
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
    )
    django.setup()


def queue(count: int) -> None:
    """``count`` emails like ``bench_e2e.small_email`` (text and HTML), in post_office's table."""
    from post_office import mail

    mail.send_many(
        [
            {
                "sender": "Bench <bench@example.com>",
                "recipients": [f"user{i}@example.net"],
                "subject": SUBJECT.format(i),
                "message": TEXT,
                "html_message": HTML,
            }
            for i in range(count)
        ]
    )


def deliver() -> float:
    """Seconds ``send_queued_mail`` takes with its defaults (a lock file of this run's own)."""
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("send_queued_mail", lockfile=str(Path.cwd() / "post_office"))
    return time.perf_counter() - started


def counts() -> dict[str, int]:
    from post_office.models import STATUS, Email

    return {
        "sent": Email.objects.filter(status=STATUS.sent).count(),
        "failed": Email.objects.filter(status=STATUS.failed).count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    configure(args.port)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    queue(args.messages)
    seconds = deliver()
    row = {
        "post_office_version": version("django-post-office"),
        "django_version": django.get_version(),
        "messages": args.messages,
        "seconds": round(seconds, 3),
        "rate": args.messages / seconds,
        **counts(),
    }
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
