"""Every write to the registry: models, versions (promotion), aliases and their history.

Other apps call these: the job and run API actions and pages promote through
`model_version_promote_job` / `model_version_promote`, and a job's end calls
`model_version_promote_by_policy` (tuning/services/experiment.py). The registry reads a run's job
and trial through the run (`run.trial`), never by importing tuning.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from runs.models import Run
from traces.models import TraceDataset
from tunix_rt.exceptions import InvalidTransition, ValidationError

from . import rules
from .files import model_card, run_files_collect
from .models import AliasChange, ModelAlias, ModelVersion, RegisteredModel
from .storage import blob_store, bytes_sha256, file_sha256

BETTER = {"max": lambda new, old: new > old, "min": lambda new, old: new < old}


def _checked(check, value: Any, field: str):
    try:
        return check(value)
    except ValueError as exc:
        raise ValidationError(str(exc), field=field) from None


def registered_model_create(*, owner, name: str, description: str = "") -> RegisteredModel:
    """A new, empty model named `name` for `owner`; 400 on `name` if they already have one."""
    name = _checked(rules.model_name_check, name, "name")
    description = _checked(rules.description_check, description, "description")
    try:
        with transaction.atomic():
            return RegisteredModel.objects.create(owner=owner, name=name, description=description)
    except IntegrityError:
        raise ValidationError(f"you already have a model named {name!r}", field="name") from None


def _model_for_promotion(*, owner, name: str) -> RegisteredModel:
    name = _checked(rules.model_name_check, name, "model")
    model = RegisteredModel.objects.filter(owner=owner, name=name).first()
    if model is None:
        try:
            with transaction.atomic():
                model = RegisteredModel.objects.create(owner=owner, name=name)
        except IntegrityError:  # created meanwhile by a concurrent promotion
            model = RegisteredModel.objects.get(owner=owner, name=name)
    return model


def _lineage(run: Run) -> dict[str, Any]:
    trial = getattr(run, "trial", None)
    dataset_hash = ""
    if "@" in run.dataset:
        dataset = TraceDataset.objects.by_reference(run.dataset)
        dataset_hash = dataset.content_hash if dataset is not None else ""
    return {
        "run_id": run.pk,
        "job_id": trial.job_id if trial else None,
        "job_name": trial.job.name if trial else "",
        "trial_id": trial.pk if trial else None,
        "trial_number": trial.number if trial else None,
        "trainer": run.trainer,
        "dataset": run.dataset,
        "dataset_hash": dataset_hash,
        "hyperparameters": run.hyperparameters,
    }


def model_version_promote(
    *, run: Run, by, model_name: str, alias: str | None = None, description: str = "", tags: list | None = None
) -> tuple[ModelVersion, bool]:
    """Freeze a succeeded run as the next version of the run owner's model `model_name` (created if
    new), copying its files into the registry storage; the same run again returns its existing
    version (created False). With `alias`, the alias then points at the version."""
    model_name = _checked(rules.model_name_check, model_name, "model")
    if alias is not None:
        alias = _checked(rules.alias_check, alias, "alias")
    description = _checked(rules.description_check, description, "description")
    tags = _checked(rules.tags_check, tags or [], "tags")
    if run.status != Run.Status.SUCCEEDED:
        raise InvalidTransition(f"run {run.pk} is {run.status}; only a succeeded run can be promoted")
    model = _model_for_promotion(owner=run.owner, name=model_name)
    version = ModelVersion.objects.filter(model=model, source_run_id=run.pk).first()
    created = version is None
    if created:
        version = _version_create(model=model, run=run, by=by, description=description, tags=tags)
    if alias is not None:
        model_alias_move(model=model, alias=alias, version=version.version, by=by)
    return version, created


def _version_create(*, model: RegisteredModel, run: Run, by, description: str, tags: list[str]) -> ModelVersion:
    lineage = _lineage(run)
    evaluation = getattr(run, "evaluation", None)
    # The model card names the version number it will most likely get; the row is numbered below.
    next_number = (model.versions.aggregate(n=Max("version"))["n"] or 0) + 1
    card = model_card(model_name=model.name, version=next_number, lineage=lineage, evaluation=evaluation)
    manifest = []
    for file in run_files_collect(run=run, card=card):
        if file.content is not None:
            sha = bytes_sha256(file.content)
            blob_store(sha256=sha, content=file.content)
        else:
            sha = file_sha256(file.source)
            blob_store(sha256=sha, path=file.source)
        manifest.append({"path": file.path, "size": file.size, "sha256": sha})
    values = {
        "run": run,
        "source_run_id": run.pk,
        "source_job_id": lineage["job_id"],
        "source_job_name": lineage["job_name"][:200],
        "source_trial_id": lineage["trial_id"],
        "source_trial_number": lineage["trial_number"],
        "trainer": run.trainer,
        "dataset": run.dataset,
        "dataset_hash": lineage["dataset_hash"],
        "hyperparameters": run.hyperparameters,
        "metrics": evaluation.metrics if evaluation else {},
        "run_metrics": run.latest_metrics or {},
        "primary_metric": evaluation.primary_metric if evaluation else "",
        "primary_score": evaluation.primary_score if evaluation else None,
        "manifest": manifest,
        "total_size": sum(entry["size"] for entry in manifest),
        "description": description,
        "tags": tags,
        "created_by": by if getattr(by, "pk", None) else None,
    }
    try:
        with transaction.atomic():
            # Lock the model row (PostgreSQL; SQLite's IMMEDIATE transactions serialise anyway)
            # so that two promotions never take the same number.
            RegisteredModel.objects.select_for_update().filter(pk=model.pk).first()
            number = (model.versions.aggregate(n=Max("version"))["n"] or 0) + 1
            return ModelVersion.objects.create(model=model, version=number, **values)
    except IntegrityError:  # the same run promoted concurrently: that version is this one
        return ModelVersion.objects.get(model=model, source_run_id=run.pk)


def model_version_promote_job(
    *, job, by, model_name: str, alias: str | None = None, **extra
) -> tuple[ModelVersion, bool]:
    """Promote a finished job's best run (409 while it runs or when it has no best run)."""
    if not job.is_terminal:
        raise InvalidTransition(f"the job is {job.status}; promote it once it has finished")
    if job.best_run_id is None:
        raise InvalidTransition("the job has no best run to promote (no trial succeeded)")
    run = Run.objects.select_related("evaluation", "trial__job", "owner").get(pk=job.best_run_id)
    return model_version_promote(run=run, by=by, model_name=model_name, alias=alias, **extra)


def model_alias_move(*, model: RegisteredModel, alias: str, version: int, by, reason: str = "") -> ModelAlias:
    """Point `alias` at version number `version` of `model` (creating the alias), atomically, and
    record the move (who, when, from, to). 400 on `version` when the model has no such version."""
    alias = _checked(rules.alias_check, alias, "alias")
    target = ModelVersion.objects.filter(model=model, version=version).first()
    if target is None:
        raise ValidationError(f"model {model.name!r} has no version {version}", field="version")
    user = by if getattr(by, "pk", None) else None
    with transaction.atomic():
        current = (
            ModelAlias.objects.select_for_update().filter(model=model, name=alias).select_related("version").first()
        )
        if current is not None and current.version_id == target.pk:
            return current
        from_version = current.version.version if current else None
        if current is None:
            current = ModelAlias(model=model, name=alias)
        current.version, current.updated_by, current.updated_at = target, user, timezone.now()
        current.save()
        AliasChange.objects.create(
            model=model,
            alias=alias,
            from_version=from_version,
            to_version=target.version,
            changed_by=user,
            reason=reason[:500],
        )
    return current


def model_alias_delete(*, model: RegisteredModel, alias: str, by) -> None:
    """Remove an alias (recorded as a move to nothing); 404-worthy absence is the caller's check."""
    with transaction.atomic():
        current = (
            ModelAlias.objects.select_for_update().filter(model=model, name=alias).select_related("version").first()
        )
        if current is None:
            raise ValidationError(f"model {model.name!r} has no alias {alias!r}", field="alias")
        AliasChange.objects.create(
            model=model, alias=alias, from_version=current.version.version, to_version=None,
            changed_by=by if getattr(by, "pk", None) else None,
        )  # fmt: skip
        current.delete()


def model_version_promote_by_policy(*, job) -> str:
    """A succeeded job's `promote_to`: promote its best run and, with an alias, move it when the
    policy allows (only_if_better: it beats the alias's version on the job's metric and mode).
    Returns what happened and why, for the job's `promotion_note`."""
    policy = rules.promotion_policy_clean(job.promote_to)
    version, created = model_version_promote_job(job=job, by=job.owner, model_name=policy["model"])
    what = f"Promoted run {version.source_run_id} as {version.model.name} v{version.version}."
    if not created:
        what = f"Run {version.source_run_id} was already {version.model.name} v{version.version}."
    alias = policy["alias"]
    if alias is None:
        return what
    current = ModelAlias.objects.filter(model=version.model, name=alias).select_related("version").first()
    if current is not None and current.version_id == version.pk:
        return f"{what} Alias {alias} already points at it."
    reason = ""
    if current is not None and policy["only_if_better"]:
        metric, mode = job.metric, job.mode
        new, old = version.score_on(metric), current.version.score_on(metric)
        if new is None:
            return f"{what} Alias {alias} stays on v{current.version.version}: this version has no {metric} value."
        if old is not None and not BETTER[mode](new, old):
            return (
                f"{what} Alias {alias} stays on v{current.version.version}: {metric} {new:.6g} does not beat "
                f"{old:.6g} ({mode})."
            )
        reason = (
            f"{metric} {new:.6g} beats {old:.6g} ({mode})"
            if old is not None
            else f"v{current.version.version} has no {metric}"
        )
    model_alias_move(
        model=version.model,
        alias=alias,
        version=version.version,
        by=job.owner,
        reason=f"job {job.pk}" + (f": {reason}" if reason else ""),
    )
    moved = f"from v{current.version.version} " if current is not None else ""
    return f"{what} Alias {alias} moved {moved}to v{version.version}" + (f": {reason}." if reason else ".")
