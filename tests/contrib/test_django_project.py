"""A Django project switches to postroom with one settings line and its own email tests, run by
Django's test runner, still pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.contrib.django_compat import backend_settings

SETTINGS = """
SECRET_KEY = "project"
INSTALLED_APPS = ["shop"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ROOT_URLCONF = "shop.urls"
DEFAULT_FROM_EMAIL = "shop@example.com"
USE_TZ = True
"""

URLS = """
from django.core.mail import send_mail
from django.http import HttpResponse
from django.urls import path


def order(request, number):
    send_mail(f"Order {number}", "Thanks for your order.", None, ["ana@example.org"])
    return HttpResponse("ok")


urlpatterns = [path("order/<int:number>", order)]
"""

TESTS = """
from django.core import mail
from django.test import SimpleTestCase, override_settings

POSTROOM = %(backend)r


class OrderMail(SimpleTestCase):
    def test_the_view_sends_one_email(self):
        self.client.get("/order/7")
        self.assertEqual(len(mail.outbox), 1)
        self.assertEqual(mail.outbox[0].subject, "Order 7")
        self.assertEqual(mail.outbox[0].to, ["ana@example.org"])

    @override_settings(**POSTROOM)
    def test_with_postroom_switched_back_on_the_outbox_still_fills(self):
        self.client.get("/order/8")
        self.assertEqual([m.subject for m in mail.outbox], ["Order 8"])

    @override_settings(**POSTROOM)
    def test_with_postroom_a_bad_address_fails_the_test(self):
        from django.core.mail import send_mail
        from postroom.errors import AddressError

        with self.assertRaises(AddressError):
            send_mail("s", "b", None, ["<broken"])
"""


def test_a_project_passes_its_own_email_tests(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "__init__.py").write_text("")
    (shop / "urls.py").write_text(URLS)
    (shop / "tests.py").write_text(TESTS % {"backend": backend_settings()})
    settings = SETTINGS + "".join(f"{k} = {v!r}\n" for k, v in backend_settings().items())
    (tmp_path / "project_settings.py").write_text(settings)
    done = subprocess.run(
        [sys.executable, "-m", "django", "test", "shop", "--settings=project_settings", "-v", "2"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ran 3 tests" in done.stderr and "OK" in done.stderr
    assert not (tmp_path / ".postroom").exists()  # nothing reached a queue
