"""Reads shared by the registry's pages and API: lists with their counts in a fixed number of
queries, a model by name within the caller's namespace, and the comparison of two versions."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Max, Prefetch, QuerySet, Sum
from django.http import Http404

from tunix_rt.exceptions import ValidationError

from .models import AliasChange, ModelAlias, ModelVersion, RegisteredModel
from .rules import SLUG

MAX_COMPARED_ITEMS = 200


def models_for_list(*, user) -> QuerySet[RegisteredModel]:
    """Models the user may see, with their version count, newest number, total size and aliases."""
    return (
        RegisteredModel.objects.visible_to(user)
        .select_related("owner")
        .annotate(
            version_count=Count("versions"), latest_version=Max("versions__version"), size=Sum("versions__total_size")
        )
        .prefetch_related(Prefetch("aliases", queryset=ModelAlias.objects.select_related("version")))
        .order_by("name", "id")
    )


def model_for_name(*, user, name: str, owner: str | None = None) -> RegisteredModel:
    """The model named `name` in the caller's namespace; staff may name another owner's (or reach a
    name only one owner has). 404 when the user may see none; 400 on `owner` when several match."""
    if not SLUG.match(name) or (owner and "\x00" in owner):
        raise Http404(f"no model named {name!r}")  # never a name: no query (PostgreSQL refuses NUL bytes)
    models = models_for_list(user=user).filter(name=name)
    if owner:
        models = models.filter(owner__username=owner)
    found = list(models[:2]) if owner else [m for m in models if m.owner_id == user.pk] or list(models[:2])
    if not found:
        raise Http404(f"no model named {name!r}")
    if len(found) > 1:
        raise ValidationError(f"several owners have a model named {name!r}: add ?owner=USERNAME", field="owner")
    return found[0]


def model_visible(*, user, pk: int) -> RegisteredModel:
    model = models_for_list(user=user).filter(pk=pk).first()
    if model is None:
        raise Http404("no such model")
    return model


def versions_for_model(*, model: RegisteredModel) -> QuerySet[ModelVersion]:
    """The model's versions, newest first, each with its aliases and creator."""
    return (
        ModelVersion.objects.filter(model=model)
        .select_related("model__owner", "created_by")
        .prefetch_related("aliases")
        .order_by("-version")
    )


def version_for_number(*, model: RegisteredModel, number: int | str) -> ModelVersion:
    version = versions_for_model(model=model).filter(version=int(number)).first()
    if version is None:
        raise Http404(f"model {model.name!r} has no version {number}")
    return version


def alias_history(*, model: RegisteredModel, limit: int = 50) -> QuerySet[AliasChange]:
    return AliasChange.objects.filter(model=model).select_related("changed_by").order_by("-changed_at", "-id")[:limit]


def _items_by_key(details: Any) -> dict[str, dict]:
    """Held-out items by a stable key (their `id`, `prompt` or `question`, else their position)."""
    items: dict[str, dict] = {}
    for index, item in enumerate(details if isinstance(details, list) else []):
        if not isinstance(item, dict):
            continue
        key = next((str(item[k]) for k in ("id", "prompt", "question", "input") if k in item), str(index))
        items[key] = item
    return items


def _prediction(item: dict) -> Any:
    return next((item[k] for k in ("predicted", "prediction", "output", "answer_predicted") if k in item), None)


def versions_compare(*, version: ModelVersion, other: ModelVersion) -> dict[str, Any]:
    """Metrics side by side (every metric either has) and the held-out items on which the two
    runs' predictions differ (from their runs' evaluations, while those runs exist)."""
    names = sorted(set(version.metrics) | set(other.metrics))
    metrics = [{"name": n, "this": version.metrics.get(n), "other": other.metrics.get(n)} for n in names]
    details = [
        getattr(getattr(v.run, "evaluation", None), "details", None) if v.run_id else None for v in (version, other)
    ]
    differing, available = [], all(d is not None for d in details)
    if available:
        mine, theirs = (_items_by_key(d) for d in details)
        for key, item in mine.items():
            if key in theirs and _prediction(item) != _prediction(theirs[key]):
                differing.append(
                    {
                        "key": key,
                        "this": _prediction(item),
                        "other": _prediction(theirs[key]),
                        "this_correct": bool(item.get("correct")),
                        "other_correct": bool(theirs[key].get("correct")),
                    }
                )
                if len(differing) >= MAX_COMPARED_ITEMS:
                    break
    return {"metrics": metrics, "differing_items": differing, "items_available": available}
