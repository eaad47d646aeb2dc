from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from traces import services
from traces.models import TraceDataset
from tunix_rt.api import JSONParser

from .serializers import TraceDatasetDetailSerializer, TraceDatasetInputSerializer, TraceDatasetSerializer


class TraceDatasetViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Reasoning-trace datasets: built-in ones and the caller's own uploads."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]
    serializer_class = TraceDatasetSerializer
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        return (
            TraceDataset.objects.visible_to(self.request.user)
            .select_related("owner")
            .defer("train_items", "eval_items")
        )

    def list(self, request, *args, **kwargs):
        """List visible datasets (built-in ones are registered on first listing)."""
        services.trace_dataset_builtins_ensure()
        return super().list(request, *args, **kwargs)

    @extend_schema(responses=TraceDatasetDetailSerializer)
    def retrieve(self, request, pk=None):
        """One dataset with a sample of each split; 404 if the caller may not see it."""
        dataset = get_object_or_404(TraceDataset.objects.visible_to(request.user).select_related("owner"), pk=pk)
        return Response(TraceDatasetDetailSerializer(dataset).data)

    @extend_schema(request=TraceDatasetInputSerializer, responses={201: TraceDatasetSerializer})
    def create(self, request):
        """Upload a JSON-lines dataset: a new version of `name`; 400 names the bad lines."""
        serializer = TraceDatasetInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        dataset = services.trace_dataset_create(owner=request.user, **serializer.validated_data)
        return Response(TraceDatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)
