from __future__ import annotations

from rest_framework import serializers

from traces.models import TraceDataset
from traces.parsing import MAX_BYTES


class TraceDatasetInputSerializer(serializers.Serializer):
    """Upload: a JSON-lines `file` (multipart) or the same text as `content` (JSON body)."""

    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)
    eval_fraction = serializers.FloatField(required=False, default=0.1, min_value=0.0, max_value=1.0)
    file = serializers.FileField(required=False, max_length=255)
    content = serializers.CharField(required=False, trim_whitespace=False, max_length=MAX_BYTES)

    def validate(self, attrs):
        if ("file" in attrs) == ("content" in attrs):
            raise serializers.ValidationError({"file": ["send exactly one of `file` (multipart) or `content` (JSON)"]})
        upload = attrs.pop("file", None)
        if upload is not None:
            if upload.size > MAX_BYTES:
                raise serializers.ValidationError(
                    {"file": [f"file is {upload.size} bytes; at most {MAX_BYTES} bytes are allowed"]}
                )
            attrs["content"] = upload.read()
        return attrs


class TraceDatasetSerializer(serializers.ModelSerializer):
    reference = serializers.CharField(read_only=True)
    owner = serializers.CharField(source="owner.username", default=None, read_only=True, allow_null=True)
    builtin = serializers.BooleanField(source="is_builtin", read_only=True)

    class Meta:
        model = TraceDataset
        fields = [
            "id",
            "reference",
            "name",
            "version",
            "owner",
            "builtin",
            "description",
            "content_hash",
            "eval_fraction",
            "train_count",
            "eval_count",
            "created_at",
        ]
        read_only_fields = fields


class TraceDatasetDetailSerializer(TraceDatasetSerializer):
    """Detail adds a bounded sample of each split."""

    SAMPLE = 20
    train_sample = serializers.SerializerMethodField()
    eval_sample = serializers.SerializerMethodField()

    class Meta(TraceDatasetSerializer.Meta):
        fields = [*TraceDatasetSerializer.Meta.fields, "train_sample", "eval_sample"]
        read_only_fields = fields

    def get_train_sample(self, obj) -> list[dict]:
        return obj.train_items[: self.SAMPLE]

    def get_eval_sample(self, obj) -> list[dict]:
        return obj.eval_items[: self.SAMPLE]
