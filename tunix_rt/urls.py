from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.api.views import password_token

from .health import health

urlpatterns = [
    path("admin/", admin.site.urls),
    # Login, logout and password change only: no password reset by e-mail (no mail is configured).
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "accounts/password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("accounts/tokens/", include("accounts.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api-auth/", include("rest_framework.urls")),
    path("api/auth/token/", password_token, name="api-token"),
    path("health/", health, name="health"),
    path("api/", include("tunix_rt.api_urls")),
    path("runs/", include("runs.urls")),
    path("datasets/", include("traces.urls")),
    path("models/", include("registry.urls")),
    path("", include("tuning.urls")),
]

handler400 = "tunix_rt.error_pages.bad_request"
handler403 = "tunix_rt.error_pages.permission_denied"
handler404 = "tunix_rt.error_pages.page_not_found"
handler500 = "tunix_rt.error_pages.server_error"
