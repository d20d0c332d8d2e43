"""Django settings for the tests of ``postroom.contrib.django`` (applied by ``conftest.py``,
which adds the backend setting of the Django version that runs)."""

from __future__ import annotations

SECRET_KEY = "postroom-tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = True
LANGUAGE_CODE = "en"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_FROM_EMAIL = "Webmaster <webmaster@example.com>"
SERVER_EMAIL = "server@example.com"
ADMINS = [("Admin Ädmin", "admin@example.com")]
MANAGERS = [("Manager", "manager@example.com")]
ROOT_URLCONF = "tests.contrib.django_urls"
ALLOWED_HOSTS = ["testserver"]
