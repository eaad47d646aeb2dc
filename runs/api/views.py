"""Runs API: runs (create, list, detail, metrics, logs, cancel, artifacts) and trainers."""

from __future__ import annotations

import django_filters
from django.http import FileResponse, Http404
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.reverse import reverse

from registry.api.views import PROMOTE_SCHEMA, promote_response
from registry.services import model_version_promote
from runs import selectors, services
from runs.models import Run
from runs.trainers.registry import all_trainers, get_trainer
from tunix_rt.api import JSONParser
from tunix_rt.exceptions import ValidationError

from .serializers import (
    ArtifactListSerializer,
    LogPageSerializer,
    LogQuerySerializer,
    MetricQuerySerializer,
    MetricSeriesSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunSerializer,
    TrainerSerializer,
)

ERRORS = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid input: field name → messages."),
}
NOT_FOUND = {404: OpenApiResponse(description="No such run, or not yours.")}


class _PresentIsoDateTimeField(IsoDateTimeField):
    empty_values = [None]  # absent: no filter; present but empty: "Enter a valid date/time" (400)


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = _PresentIsoDateTimeField


class RunFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Run.Status.choices, help_text="Repeat for several.")
    trainer = django_filters.CharFilter()
    dataset = django_filters.CharFilter()
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Run
        fields = ["status", "trainer", "dataset"]


@extend_schema_view(
    list=extend_schema(summary="List runs", description="Your runs (staff: all), newest first."),
    retrieve=extend_schema(summary="A run with its evaluation", responses={200: RunDetailSerializer, **NOT_FOUND}),
)
class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Training runs: trainer + dataset + hyperparameters, tracked end to end."""

    serializer_class = RunSerializer
    filterset_class = RunFilter
    ordering_fields = [
        "created_at",
        "started_at",
        "finished_at",
        "status",
        "trainer",
        "dataset",
        "name",
        "primary_score",
    ]
    ordering = ["-created_at", "-id"]
    parser_classes = [JSONParser]

    def get_queryset(self):
        return selectors.runs_for_list(user=self.request.user)

    def get_serializer_class(self):
        return RunSerializer if self.action == "list" else RunDetailSerializer

    def filter_queryset(self, queryset):
        # Filters and ordering belong to the list; query strings of other routes mean other things.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    @extend_schema(
        summary="Create a run",
        description="Validates the trainer, dataset and hyperparameters, stores the run as `queued` "
        "and enqueues it on a worker. Nothing is written when the input is invalid.",
        request=RunCreateSerializer,
        responses={
            201: RunDetailSerializer,
            **ERRORS,
            429: OpenApiResponse(
                OpenApiTypes.OBJECT, description="You already have MAX_ACTIVE_RUNS_PER_USER queued or running runs."
            ),
        },
    )
    def create(self, request):
        data = RunCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = services.run_create(owner=request.user, **data.validated_data)
        body = RunDetailSerializer(run, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": str(body["url"])})

    @extend_schema(
        summary="Metric series",
        parameters=[MetricQuerySerializer],
        responses={200: MetricSeriesSerializer, **NOT_FOUND},
    )
    @action(detail=True, methods=["get"])
    def metrics(self, request, pk=None):
        """The per-step metrics, as columns."""
        query = MetricQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        series = selectors.run_metric_series(run=self.get_object(), after_step=query.validated_data.get("after"))
        return Response(series)

    @extend_schema(
        summary="Log lines",
        description="The newest lines, or with `after` the lines after that `seq` (poll with `next_after` to tail "
        "a running run). Each run keeps its newest LOG_MAX_LINES lines; `dropped` counts the rest.",
        parameters=[LogQuerySerializer],
        responses={200: LogPageSerializer, **ERRORS, **NOT_FOUND},
    )
    @action(detail=True, methods=["get"])
    def logs(self, request, pk=None):
        query = LogQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        run = self.get_object()
        page = selectors.run_log_page(run=run, **query.validated_data)
        return Response({**page.__dict__, "status": run.status})

    @extend_schema(
        summary="Cancel a run",
        description="A queued run is cancelled at once; a running one is asked to stop and ends `cancelled` "
        "shortly (its processes are ended). 409 when the run has already ended.",
        request=None,
        responses={
            202: RunDetailSerializer,
            409: OpenApiResponse(OpenApiTypes.OBJECT, description="The run has already ended."),
            **NOT_FOUND,
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = services.run_cancel(run=self.get_object())
        return Response(
            RunDetailSerializer(run, context=self.get_serializer_context()).data, status=status.HTTP_202_ACCEPTED
        )

    @PROMOTE_SCHEMA
    @action(detail=True, methods=["post"])
    def promote(self, request, pk=None):
        """Promote a succeeded run to a model version (docs/registry.md)."""
        run = self.get_object()
        return promote_response(request, lambda **body: model_version_promote(run=run, **body))

    @extend_schema(summary="Artifacts", responses={200: ArtifactListSerializer, **NOT_FOUND})
    @action(detail=True, methods=["get"])
    def artifacts(self, request, pk=None):
        """The files in the run's output folder, with their sizes and download links."""
        run = self.get_object()
        files, truncated = selectors.run_artifacts(run=run)
        for entry in files:
            entry["url"] = reverse("run-artifact", args=[run.pk, entry["path"]], request=request)
        return Response({"files": files, "truncated": truncated})

    @extend_schema(
        operation_id="runs_artifacts_download",
        summary="Download an artifact",
        parameters=[OpenApiParameter("path", OpenApiTypes.STR, OpenApiParameter.PATH, description="As listed.")],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY),
            404: OpenApiResponse(description="No such file in the run's output folder."),
        },
    )
    def artifact(self, request, pk=None, path=""):
        """One file of the run's output folder."""
        file = selectors.run_artifact_file(run=self.get_object(), path=path)
        if file is None:
            raise Http404("no such artifact")
        return FileResponse(file.open("rb"), as_attachment=True, filename=file.name)


@extend_schema_view(
    list=extend_schema(summary="Trainers", responses={200: TrainerSerializer(many=True)}),
    retrieve=extend_schema(
        summary="A trainer's schema",
        responses={200: TrainerSerializer, 404: OpenApiResponse(description="No such trainer.")},
    ),
)
class TrainerViewSet(viewsets.ViewSet):
    """Trainer plugins with their datasets and hyperparameter schemas."""

    lookup_field = "name"
    lookup_value_regex = r"[^/]+"
    serializer_class = TrainerSerializer

    def list(self, request):
        return Response(
            TrainerSerializer([trainer.describe(request.user) for trainer in all_trainers()], many=True).data
        )

    def retrieve(self, request, name=None):
        try:
            trainer = get_trainer(name)
        except ValidationError:
            raise NotFound(f"no trainer named {name!r}") from None
        return Response(TrainerSerializer(trainer.describe(request.user)).data)
