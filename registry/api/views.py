"""Model registry API (/api/models/): owner-scoped; the services do every write. The promote
actions live on the job and run viewsets and call `promote_response` below."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from registry import selectors, services
from registry.downloads import version_archive_response
from registry.rules import SLUG
from tunix_rt.api import JSONParser

from .serializers import (
    AliasMoveSerializer,
    ModelCreateSerializer,
    ModelVersionSerializer,
    PromoteSerializer,
    RegisteredModelDetailSerializer,
    RegisteredModelSerializer,
)


def _refusal(description: str) -> OpenApiResponse:
    return OpenApiResponse(OpenApiTypes.OBJECT, description=f'`{{"detail": "message"}}`: {description}')


INVALID = {400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid input: field name → messages.")}
NOT_FOUND = {404: OpenApiResponse(description="No such model or version, or not yours.")}
OWNER = OpenApiParameter("owner", str, description="Staff: the owner whose model this is, when several have the name.")
NUMBER = OpenApiParameter("number", int, OpenApiParameter.PATH, description="The version number.")
ALIAS = OpenApiParameter("alias", str, OpenApiParameter.PATH, description="An alias (a slug of at most 50 characters).")
PROMOTE_SCHEMA = extend_schema(
    request=PromoteSerializer,
    responses={
        201: ModelVersionSerializer,
        200: ModelVersionSerializer,
        **INVALID,
        409: _refusal("not finished, no best run, not succeeded, its folder is gone or too large."),
    },
)


def promote_response(request, promote, **context) -> Response:
    """Validate a promotion body, call `promote(**fields)` (a registry service) and render the
    version: 201 when new, 200 when the run already was that version."""
    body = PromoteSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    data = dict(body.validated_data)
    version, created = promote(model_name=data.pop("model"), by=request.user, **data)
    version = selectors.version_for_number(model=version.model, number=version.version)
    return Response(
        ModelVersionSerializer(version, context={"request": request}).data,
        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
    )


class RegisteredModelViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Named models with their immutable versions, aliases and downloads."""

    serializer_class = RegisteredModelSerializer
    lookup_field = "name"
    lookup_value_regex = r"[^/]+"
    parser_classes = [JSONParser]
    filter_backends: list = []

    def get_queryset(self):
        return selectors.models_for_list(user=self.request.user)

    def get_object(self):
        name = self.kwargs["name"]
        return selectors.model_for_name(user=self.request.user, name=name, owner=self.request.query_params.get("owner"))

    def _version(self, version) -> Response:
        return Response(ModelVersionSerializer(version, context=self.get_serializer_context()).data)

    @extend_schema(request=ModelCreateSerializer, responses={201: RegisteredModelDetailSerializer, **INVALID})
    def create(self, request):
        """Create an empty model (versions come from promotions); 400 on `name` if you have one."""
        body = ModelCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        model = services.registered_model_create(owner=request.user, **body.validated_data)
        model = selectors.model_visible(user=request.user, pk=model.pk)
        data = RegisteredModelDetailSerializer(model, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[OWNER], responses={200: RegisteredModelDetailSerializer, **NOT_FOUND})
    def retrieve(self, request, name=None):
        """A model with its aliases and their recent moves."""
        return Response(RegisteredModelDetailSerializer(self.get_object(), context=self.get_serializer_context()).data)

    @extend_schema(parameters=[OWNER], responses={200: ModelVersionSerializer(many=True), **NOT_FOUND})
    @action(detail=True, methods=["get"])
    def versions(self, request, name=None):
        """The model's versions, newest first, paginated."""
        page = self.paginate_queryset(selectors.versions_for_model(model=self.get_object()))
        return self.get_paginated_response(
            ModelVersionSerializer(page, many=True, context=self.get_serializer_context()).data
        )

    @extend_schema(parameters=[OWNER, NUMBER], responses={200: ModelVersionSerializer, **NOT_FOUND})
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>[0-9]{1,9})", url_name="version")
    def version(self, request, name=None, number=None):
        """One version: lineage, hyperparameters, scores and its files (path, size, sha256)."""
        return self._version(selectors.version_for_number(model=self.get_object(), number=number))

    @extend_schema(
        parameters=[OWNER, NUMBER],
        responses={
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The version's files, zipped."),
            **NOT_FOUND,
            410: _refusal("the version's files are missing from the registry storage."),
        },
    )
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>[0-9]{1,9})/download", url_name="download")
    def download(self, request, name=None, number=None):
        """The version's files as a zip archive (`<model>-v<n>/...`), streamed."""
        version = selectors.version_for_number(model=self.get_object(), number=number)
        return version_archive_response(version)

    @extend_schema(methods=["GET"], parameters=[OWNER, ALIAS], responses={200: ModelVersionSerializer, **NOT_FOUND})
    @extend_schema(
        methods=["PUT"],
        parameters=[OWNER, ALIAS],
        request=AliasMoveSerializer,
        responses={200: ModelVersionSerializer, **INVALID, **NOT_FOUND},
    )
    @extend_schema(methods=["DELETE"], parameters=[OWNER, ALIAS], responses={204: None, **NOT_FOUND})
    @action(detail=True, methods=["get", "put", "delete"], url_path=r"aliases/(?P<alias>[^/]+)", url_name="alias")
    def alias(self, request, name=None, alias=None):
        """GET: the version the alias points at. PUT `{"version": n}`: move it there (atomically,
        recorded). DELETE: remove it (recorded)."""
        model = self.get_object()
        if request.method != "PUT" and not SLUG.match(alias):
            # Never an alias (PostgreSQL refuses a NUL byte in a query): nothing to find.
            return Response(
                {"detail": f"model {model.name!r} has no alias {alias!r}"}, status=status.HTTP_404_NOT_FOUND
            )
        if request.method == "PUT":
            body = AliasMoveSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            moved = services.model_alias_move(
                model=model, alias=alias, version=body.validated_data["version"], by=request.user
            )
            return self._version(selectors.version_for_number(model=model, number=moved.version.version))
        current = model.aliases.filter(name=alias).select_related("version").first()
        if current is None:
            return Response(
                {"detail": f"model {model.name!r} has no alias {alias!r}"}, status=status.HTTP_404_NOT_FOUND
            )
        if request.method == "DELETE":
            services.model_alias_delete(model=model, alias=alias, by=request.user)
            return Response(status=status.HTTP_204_NO_CONTENT)
        return self._version(selectors.version_for_number(model=model, number=current.version.version))
