"""Serializer pieces every app's API shares."""

from __future__ import annotations

from rest_framework import serializers


class StrictSerializer(serializers.Serializer):
    """An input serializer that refuses fields it does not declare (400 `unknown field` each)
    instead of ignoring them: a misspelt option must never be silently dropped."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class JSONCharField(serializers.CharField):
    """A JSON string only: DRF's CharField would turn `0` or `true` into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class JSONIntegerField(serializers.IntegerField):
    """A JSON integer only: DRF's IntegerField would read "7", 7.0 or true as 7."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)
