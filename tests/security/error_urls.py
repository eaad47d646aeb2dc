"""The project's URLs plus views that fail, for the production error-page tests."""

from __future__ import annotations

from django.conf import settings
from django.urls import path
from rest_framework.decorators import api_view

from tunix_rt.urls import handler400, handler403, handler404, handler500, urlpatterns  # noqa: F401


def _secret_failure() -> RuntimeError:
    return RuntimeError(f"boom: broker {settings.CELERY_BROKER_URL} key {settings.SECRET_KEY}")


def page_boom(request):
    raise _secret_failure()


@api_view(["GET", "POST"])
def api_boom(request):
    raise _secret_failure()


urlpatterns = [
    path("boom/", page_boom),
    path("api/boom/", api_boom),
    *urlpatterns,
]
