from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

from .health import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api-auth/", include("rest_framework.urls")),
    path("api/auth/token/", obtain_auth_token, name="api-token"),
    path("health/", health, name="health"),
    path("api/", include("runs.api.urls")),
    path("api/tuning/", include("tuning.api.urls")),
    path("api/", include("traces.api.urls")),
    path("runs/", include("runs.urls")),
    path("datasets/", include("traces.urls")),
    path("", include("tuning.urls")),
]
