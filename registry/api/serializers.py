"""Input serializers check shapes (services have the last word); output serializers render."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.reverse import reverse

from registry.models import (
    MAX_ALIAS_NAME,
    MAX_DESCRIPTION,
    MAX_MODEL_NAME,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    AliasChange,
    ModelVersion,
    RegisteredModel,
)
from tunix_rt.serializers import JSONCharField, JSONIntegerField, StrictSerializer


class PromoteSerializer(StrictSerializer):
    """Promote a run (or a job's best run) to a model of its owner, created if new."""

    model = JSONCharField(max_length=MAX_MODEL_NAME, help_text="A slug, unique per owner.")
    alias = JSONCharField(
        max_length=MAX_ALIAS_NAME, required=False, allow_null=True, help_text="An alias to point at the version."
    )
    description = JSONCharField(max_length=MAX_DESCRIPTION, required=False, allow_blank=True)
    tags = serializers.ListField(child=JSONCharField(max_length=MAX_TAG_LENGTH), max_length=MAX_TAGS, required=False)


class ModelCreateSerializer(StrictSerializer):
    name = JSONCharField(max_length=MAX_MODEL_NAME, help_text="A slug, unique per owner.")
    description = JSONCharField(max_length=MAX_DESCRIPTION, required=False, allow_blank=True)


class AliasMoveSerializer(StrictSerializer):
    version = JSONIntegerField(min_value=1, max_value=2**31 - 1, help_text="The version number.")


class ManifestEntrySerializer(serializers.Serializer):
    path = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()


class ModelVersionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name", read_only=True)
    owner = serializers.CharField(source="model.owner.get_username", read_only=True)
    run = serializers.IntegerField(source="source_run_id", read_only=True, help_text="The run it was promoted from.")
    run_exists = serializers.SerializerMethodField()
    job = serializers.IntegerField(source="source_job_id", read_only=True, allow_null=True)
    job_name = serializers.CharField(source="source_job_name", read_only=True)
    trial = serializers.IntegerField(source="source_trial_id", read_only=True, allow_null=True)
    trial_number = serializers.IntegerField(source="source_trial_number", read_only=True, allow_null=True)
    files = ManifestEntrySerializer(source="manifest", many=True, read_only=True)
    created_by = serializers.CharField(source="created_by.get_username", read_only=True, allow_null=True)
    aliases = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "model", "owner", "version", "run", "run_exists", "job", "job_name", "trial", "trial_number", "trainer",
            "dataset", "dataset_hash", "hyperparameters", "metrics", "run_metrics", "primary_metric",
            "primary_score", "files", "total_size", "description", "tags", "aliases", "created_by", "created_at",
            "download_url",
        ]  # fmt: skip
        read_only_fields = fields

    def get_run_exists(self, version) -> bool:
        return version.run_id is not None

    def get_aliases(self, version) -> list[str]:
        return sorted(alias.name for alias in version.aliases.all())

    def get_download_url(self, version) -> str:
        return reverse(
            "registered-model-download",
            kwargs={"name": version.model.name, "number": version.version},
            request=self.context.get("request"),
        )


class AliasChangeSerializer(serializers.ModelSerializer):
    changed_by = serializers.CharField(source="changed_by.get_username", read_only=True, allow_null=True)

    class Meta:
        model = AliasChange
        fields = ["alias", "from_version", "to_version", "changed_by", "changed_at", "reason"]
        read_only_fields = fields


class RegisteredModelSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    version_count = serializers.IntegerField(read_only=True)
    latest_version = serializers.IntegerField(read_only=True, allow_null=True)
    size = serializers.IntegerField(read_only=True, allow_null=True, help_text="Bytes over every version.")
    aliases = serializers.SerializerMethodField(help_text="Alias → version number.")
    url = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = [
            "name",
            "owner",
            "description",
            "version_count",
            "latest_version",
            "size",
            "aliases",
            "created_at",
            "url",
        ]
        read_only_fields = fields

    def get_aliases(self, model) -> dict[str, int]:
        return {alias.name: alias.version.version for alias in model.aliases.all()}

    def get_url(self, model) -> str:
        return reverse("registered-model-detail", kwargs={"name": model.name}, request=self.context.get("request"))


class RegisteredModelDetailSerializer(RegisteredModelSerializer):
    alias_history = serializers.SerializerMethodField()

    class Meta(RegisteredModelSerializer.Meta):
        fields = [*RegisteredModelSerializer.Meta.fields, "alias_history"]
        read_only_fields = fields

    def get_alias_history(self, model) -> AliasChangeSerializer(many=True):
        from registry.selectors import alias_history

        return AliasChangeSerializer(alias_history(model=model), many=True).data
