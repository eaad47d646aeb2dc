"""Token API: the caller's own tokens (list, create, one, revoke), and the password sign-in for scripts."""

from __future__ import annotations

from axes.utils import reset as axes_reset
from django.contrib.auth import authenticate
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, parsers, status, viewsets
from rest_framework.decorators import api_view, authentication_classes, parser_classes, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from accounts import services
from accounts.models import ApiToken
from tunix_rt.api import JSONParser

from .serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenSerializer,
    DetailSerializer,
    PasswordTokenResponseSerializer,
    PasswordTokenSerializer,
    TokenCreateSerializer,
)


class ApiTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The caller's API tokens. Tokens are personal: another user's (staff included) is a 404; staff
    revoke anyone's in the admin."""

    serializer_class = ApiTokenSerializer
    parser_classes = [JSONParser]
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return ApiToken.objects.none()
        return ApiToken.objects.for_user(self.request.user)

    @extend_schema(request=TokenCreateSerializer, responses={201: ApiTokenCreatedSerializer})
    def create(self, request):
        """Create a named token; the answer holds its key, shown this once and never stored."""
        serializer = TokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, key = services.token_create(user=request.user, **serializer.validated_data)
        token.token = key
        return Response(ApiTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        """Revoke one of the caller's tokens: it is refused from the next request on."""
        services.token_revoke(token=get_object_or_404(self.get_queryset(), pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(
    request=PasswordTokenSerializer,
    responses={
        200: PasswordTokenResponseSerializer,
        429: OpenApiResponse(DetailSerializer, description="Locked after too many failed sign-ins (docs/security.md)."),
    },
)
@api_view(["POST"])
@authentication_classes([])
@permission_classes([AllowAny])
@parser_classes([parsers.FormParser, parsers.MultiPartParser, JSONParser])
def password_token(request):
    """Sign in with a username and password: a new token named `name` (default "api-token")."""
    serializer = PasswordTokenSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    # The Django request, not DRF's wrapper: django-axes flags a locked-out attempt on it, and its
    # middleware turns this 400 into the locked-out answer (accounts/lockout.py).
    user = authenticate(request._request, username=data["username"], password=data["password"])
    if user is None:
        raise ValidationError({"non_field_errors": ["Unable to log in with provided credentials."]})
    # A success clears the failure count, as a page sign-in does (AXES_RESET_ON_SUCCESS). That runs on
    # Django's user_logged_in signal, whose axes handler would open a session: the API needs none.
    axes_reset(username=user.get_username())
    _, key = services.token_create(user=user, name=data["name"], expires_in_days=services.default_expiry_days())
    return Response({"token": key})
