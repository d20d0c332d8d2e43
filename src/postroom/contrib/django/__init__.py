"""Django: ``EMAIL_BACKEND = "postroom.contrib.django.EmailBackend"``.

Every way Django sends mail (``send_mail``, ``send_mass_mail``, ``mail_admins``,
``mail_managers``, ``EmailMessage.send()``, ``get_connection().send_messages()``) then queues
through postroom: the request never waits for SMTP. See :class:`EmailBackend` for the settings
and the message attributes it reads.
"""

from __future__ import annotations

from postroom.contrib.django.backend import EmailBackend
from postroom.contrib.django.convert import to_email

__all__ = ["EmailBackend", "to_email"]
