"""URLs of the Django test project: one view that sends a welcome email."""

from __future__ import annotations

from django.core.mail import send_mail
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import path


def signup(request: HttpRequest) -> HttpResponse:
    address = request.GET["email"]
    with transaction.atomic():
        send_mail("Welcome", "Thanks for signing up.", None, [address])
        if request.GET.get("fail"):
            transaction.set_rollback(True)
    return HttpResponse("ok")


urlpatterns = [path("signup", signup)]
