from rest_framework.routers import SimpleRouter

from .views import TraceDatasetViewSet

router = SimpleRouter()
router.register("datasets", TraceDatasetViewSet, basename="trace-dataset")

urlpatterns = router.urls
