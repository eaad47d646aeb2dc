from rest_framework.routers import DefaultRouter

from .views import TuningJobViewSet

router = DefaultRouter()
# No `.json` format-suffix twins: they passed `format=` to custom actions, which answered 500.
# `?format=json` still selects a renderer.
router.include_format_suffixes = False
router.register("jobs", TuningJobViewSet, basename="tuning-job")

urlpatterns = router.urls
