"""The one API router: its root (/api/) lists every endpoint of every app."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from accounts.api.views import ApiTokenViewSet
from registry.api.views import RegisteredModelViewSet
from runs.api.views import RunViewSet, TrainerViewSet
from traces.api.views import TraceDatasetViewSet
from tuning.api.views import TuningJobViewSet

router = DefaultRouter()
# No `.json` format-suffix twins: they passed `format=` to custom actions, which answered 500.
# `?format=json` still selects a renderer.
router.include_format_suffixes = False
router.register("runs", RunViewSet, basename="run")
router.register("trainers", TrainerViewSet, basename="trainer")
router.register("tuning/jobs", TuningJobViewSet, basename="tuning-job")
router.register("datasets", TraceDatasetViewSet, basename="trace-dataset")
router.register("auth/tokens", ApiTokenViewSet, basename="api-tokens")
router.register("models", RegisteredModelViewSet, basename="registered-model")

urlpatterns = [
    # /api/tuning/ stays a root of its own (it was one before the routers were merged).
    path("tuning/", router.APIRootView.as_view(api_root_dict={"jobs": "tuning-job-list"}), name="tuning-api-root"),
    # Before the router: a file path has no trailing slash and may contain slashes.
    path("runs/<int:pk>/artifacts/<path:path>", RunViewSet.as_view({"get": "artifact"}), name="run-artifact"),
    *router.urls,
]
