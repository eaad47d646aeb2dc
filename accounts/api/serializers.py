"""Token API serializers: input serializers validate request data, output serializers render."""

from __future__ import annotations

from rest_framework import serializers

from accounts.models import ApiToken
from accounts.services import MAX_EXPIRY_DAYS, PASSWORD_TOKEN_NAME, default_expiry_days


class _JSONCharField(serializers.CharField):
    """A JSON string only: DRF would turn `0` or `true` into a name."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class _JSONIntegerField(serializers.IntegerField):
    """A JSON integer only: DRF would read "7", 7.0 or true as 7."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class _NoUnknownFields(serializers.Serializer):
    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return attrs


class TokenCreateSerializer(_NoUnknownFields):
    """A token to create (a JSON body)."""

    name = _JSONCharField(max_length=ApiToken.NAME_MAX_LENGTH, help_text="What the token is for.")
    expires_in_days = _JSONIntegerField(
        min_value=1,
        max_value=MAX_EXPIRY_DAYS,
        required=False,
        allow_null=True,
        default=default_expiry_days,
        help_text="Days until the token expires; null: never. Left out: TUNIX_RT_TOKEN_EXPIRY_DAYS.",
    )


class PasswordTokenSerializer(serializers.Serializer):
    """POST /api/auth/token/: a username and password (form or JSON), as DRF's obtain_auth_token took."""

    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})
    name = serializers.CharField(max_length=ApiToken.NAME_MAX_LENGTH, required=False, default=PASSWORD_TOKEN_NAME)


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "expires_at"]
        read_only_fields = fields


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    """The answer to a creation: the only time the key is shown."""

    token = serializers.CharField(read_only=True, help_text="The secret: send it as `Authorization: Token <key>`.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class PasswordTokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True)


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField(read_only=True)
