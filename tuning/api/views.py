"""Tuning jobs API (/api/tuning/): owner-scoped; services do every write."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from registry.api.views import PROMOTE_SCHEMA, promote_response
from registry.services import model_version_promote_job
from tuning import selectors, services
from tuning.models import TuningJob

from .serializers import TrialSerializer, TuningJobCreateSerializer, TuningJobSerializer


def _refusal(description: str) -> OpenApiResponse:
    return OpenApiResponse(OpenApiTypes.OBJECT, description=f'`{{"detail": "message"}}`: {description}')


# The refusals the transition services raise (tunix_rt.exceptions), documented so that clients and
# the schema tests know every status code a transition answers.
NOT_NOW = {409: _refusal("the job's status forbids this transition.")}
NO_BROKER = {503: _refusal("Ray is not installed or the task broker is unreachable; nothing changed.")}
TOO_MANY = {429: _refusal("you already have MAX_ACTIVE_JOBS_PER_USER queued or running jobs.")}


class TuningJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Create, list and inspect tuning jobs; start, cancel and clone them; list their trials."""

    serializer_class = TuningJobSerializer
    filterset_fields = ["status", "trainer"]
    ordering_fields = ["created_at", "name", "status", "best_metric_value"]

    def get_queryset(self):
        return selectors.tuning_jobs_with_progress(TuningJob.objects.visible_to(self.request.user))

    def _render(self, job: TuningJob, code: int = status.HTTP_200_OK) -> Response:
        job = self.get_queryset().get(pk=job.pk)
        return Response(TuningJobSerializer(job, context=self.get_serializer_context()).data, status=code)

    @extend_schema(request=TuningJobCreateSerializer, responses={201: TuningJobSerializer})
    def create(self, request, *args, **kwargs):
        """Create a job (status `created`); 400 names every bad field."""
        serializer = TuningJobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = services.tuning_job_create(owner=request.user, **serializer.validated_data)
        return self._render(job, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={202: TuningJobSerializer, **NOT_NOW, **TOO_MANY, **NO_BROKER})
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        """Queue the job's experiment (202); 409 unless `created`, 503 without Ray or broker."""
        job = services.tuning_job_start(job=self.get_object())
        return self._render(job, status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: TuningJobSerializer, **NOT_NOW})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a created/queued job at once, or stop a running one within seconds; 409 if finished."""
        job = services.tuning_job_cancel(job=self.get_object(), by=request.user)
        return self._render(job)

    @extend_schema(request=None, responses={202: TuningJobSerializer, **NOT_NOW, **NO_BROKER})
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        """Resume a failed/cancelled job from Ray's saved state, rerunning its failed trials (202);
        finished trials are kept. 409 unless failed or cancelled, 503 without Ray or broker."""
        job = services.tuning_job_resume(job=self.get_object())
        return self._render(job, status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={201: TuningJobSerializer})
    @action(detail=True, methods=["post"])
    def clone(self, request, pk=None):
        """A new `created` job with the same configuration, owned by the caller."""
        job = services.tuning_job_clone(job=self.get_object(), owner=request.user)
        return self._render(job, status.HTTP_201_CREATED)

    @PROMOTE_SCHEMA
    @action(detail=True, methods=["post"])
    def promote(self, request, pk=None):
        """Promote the finished job's best run to a model version (docs/registry.md)."""
        job = self.get_object()
        return promote_response(request, lambda **body: model_version_promote_job(job=job, **body))

    @extend_schema(
        responses={200: TrialSerializer(many=True)},
        parameters=[
            OpenApiParameter(
                "ordering",
                str,
                description="metric (best first), number, status, iterations, best_metric_value, "
                "latest_metric_value, created_at, started_at, finished_at; prefix - to reverse.",
            )
        ],
        filters=False,
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def trials(self, request, pk=None):
        """The job's trials, paginated, each with its run and evaluation score."""
        job = self.get_object()
        trials = selectors.trials_for_job(job, ordering=request.query_params.get("ordering"))
        page = self.paginate_queryset(trials)
        return self.get_paginated_response(TrialSerializer(page, many=True).data)
