from django.urls import path
from rest_framework.routers import DefaultRouter

from .views import RunViewSet, TrainerViewSet

router = DefaultRouter()
# No `.json` format-suffix twins: they passed `format=` to custom actions, which answered 500.
# `?format=json` still selects a renderer.
router.include_format_suffixes = False
router.register("runs", RunViewSet, basename="run")
router.register("trainers", TrainerViewSet, basename="trainer")

urlpatterns = [
    # Before the router: a file path has no trailing slash and may contain slashes.
    path("runs/<int:pk>/artifacts/<path:path>", RunViewSet.as_view({"get": "artifact"}), name="run-artifact"),
    *router.urls,
]
