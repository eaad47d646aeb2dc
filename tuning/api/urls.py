from rest_framework.routers import DefaultRouter

from .views import TuningJobViewSet

router = DefaultRouter()
router.register("jobs", TuningJobViewSet, basename="tuning-job")

urlpatterns = router.urls
