"""What differs between the Django versions the tests run on (5.2 LTS, 6.1)."""

from __future__ import annotations

from typing import Any

import django
import pytest

BACKEND = "postroom.contrib.django.EmailBackend"
#: Django 6.1 configures email backends through MAILERS (EMAIL_BACKEND is deprecated)
HAS_MAILERS = django.VERSION >= (6, 1)


def backend_settings(**options: Any) -> dict[str, Any]:
    """The settings that make postroom's backend the default one, on this Django."""
    if HAS_MAILERS:
        return {"MAILERS": {"default": {"BACKEND": BACKEND, "OPTIONS": options}}}
    assert not options, "options need MAILERS (Django 6.1)"
    return {"EMAIL_BACKEND": BACKEND}


def legacy_mail_api() -> list[pytest.MarkDecorator]:
    """Django 6.1 deprecates ``get_connection()``, ``fail_silently`` and positional options in
    favour of MAILERS; tests that exercise that API on purpose (6.1 still runs it, and
    applications still call it) accept its deprecation warnings, nothing else."""
    if not HAS_MAILERS:
        return []
    return [
        pytest.mark.filterwarnings("ignore::django.utils.deprecation.RemovedInDjango2028Warning")
    ]


def django_smtp_backend(port: int) -> Any:
    """Django's own SMTP backend, sending to 127.0.0.1:``port``, on this Django."""
    from django.core.mail.backends.smtp import EmailBackend

    if not HAS_MAILERS:
        return EmailBackend(host="127.0.0.1", port=port)
    from django.conf import settings
    from django.core.mail import mailers
    from django.test import override_settings

    smtp = {"BACKEND": "django.core.mail.backends.smtp.EmailBackend"}
    smtp["OPTIONS"] = {"host": "127.0.0.1", "port": port}  # type: ignore[assignment]
    with override_settings(MAILERS={**settings.MAILERS, "smtp": smtp}):
        return mailers["smtp"]
