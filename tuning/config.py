"""A tuning job's configuration: one frozen type, validated once, shared by every layer.

`JobConfig` lists each field once, with its type, default, bounds and help. `JobConfig.validate`
turns a mapping (an API body, the form's fields, a clone, the demo) into a normalised config or a
`ValidationError` naming every bad field; the API serializer (`tuning/api/serializers.py`) is
generated from the same fields, so adding a job field touches this type, the model and its
migration, and at most one form widget. Pure Python: no Ray import.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from registry.rules import promotion_policy_clean
from runs.trainers.base import Trainer
from runs.trainers.registry import get_trainer
from tunix_rt.exceptions import ValidationError

from .models import TuningJob
from .search_space import limit, total_trials, validate_search_space

MAX_NAME_LENGTH = 200
MAX_CONCURRENT_TRIALS = 64
MAX_TIME_BUDGET_S = 7 * 24 * 3600
MAX_CPUS_PER_TRIAL = 256
MAX_GPUS_PER_TRIAL = 16
MAX_SEED = 2**31 - 1
MAX_TRIAL_RETRIES = 10


def _max_trials() -> int:
    return limit("MAX_TRIALS")


@dataclass(frozen=True)
class Spec:
    """How one field is checked: its kind, bounds (a number or a callable read at validation
    time, for bounds from settings), choices, and whether null is allowed."""

    kind: str  # "str", "int", "float", "object", "choice"
    help: str = ""
    low: float | None = None
    high: float | Callable[[], float] | None = None
    low_open: bool = False
    max_length: int | None = None
    choices: tuple[tuple[str, str], ...] = ()  # (value, label)
    nullable: bool = False
    required: bool = False
    # An object's own shape: returns the cleaned value or raises ValueError.
    check: Callable[[Any], Any] | None = None

    def high_value(self) -> float | None:
        return self.high() if callable(self.high) else self.high


def _f(default: Any, spec: Spec) -> Any:
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"spec": spec})
    return field(default=default, metadata={"spec": spec})


@dataclass(frozen=True)
class JobConfig:
    name: str = _f("", Spec("str", "A name for the job.", max_length=MAX_NAME_LENGTH, required=True))
    trainer: str = _f("", Spec("str", "A trainer name (GET /api/trainers/).", max_length=100, required=True))
    dataset: str = _f("", Spec("str", "One of the trainer's datasets.", max_length=200, required=True))
    search_space: dict = _f({}, Spec("object", "Hyperparameter name → specification (docs/tuning.md).", required=True))
    fixed_hyperparameters: dict = _f({}, Spec("object", "Hyperparameters every trial uses."))
    metric: str | None = _f(None, Spec("str", "Defaults to the trainer's metric.", max_length=100, nullable=True))
    mode: str | None = _f(
        None,
        Spec("choice", "max or min; defaults to the trainer's.", choices=tuple(TuningJob.Mode.choices), nullable=True),
    )
    num_samples: int = _f(10, Spec("int", "Trials (per grid combination).", low=1, high=_max_trials))
    max_concurrent_trials: int = _f(1, Spec("int", "Trials running at once.", low=1, high=MAX_CONCURRENT_TRIALS))
    search_algorithm: str = _f(
        "random", Spec("choice", "How configurations are sampled.", choices=tuple(TuningJob.SearchAlgorithm.choices))
    )
    scheduler: str = _f("fifo", Spec("choice", "Which trials stop early.", choices=tuple(TuningJob.Scheduler.choices)))
    time_budget_s: int | None = _f(
        None, Spec("int", "Seconds the experiment may run.", low=1, high=MAX_TIME_BUDGET_S, nullable=True)
    )
    cpus_per_trial: float = _f(
        1.0, Spec("float", "CPUs Ray reserves per trial.", low=0, high=MAX_CPUS_PER_TRIAL, low_open=True)
    )
    gpus_per_trial: float = _f(0.0, Spec("float", "GPUs Ray reserves per trial.", low=0, high=MAX_GPUS_PER_TRIAL))
    seed: int | None = _f(None, Spec("int", "Seed of the searcher.", low=0, high=MAX_SEED, nullable=True))
    max_failed_trials: int | None = _f(
        None, Spec("int", "Stop the job once more trials than this failed.", low=0, high=_max_trials, nullable=True)
    )
    max_trial_retries: int = _f(
        0, Spec("int", "Retries of a failing trial (default 0).", low=0, high=MAX_TRIAL_RETRIES)
    )
    promote_to: dict | None = _f(
        None,
        Spec(
            "object",
            'When the job succeeds, promote its best run: {"model": NAME, "alias": ALIAS, "only_if_better": true} '
            "(docs/registry.md).",
            nullable=True,
            check=promotion_policy_clean,
        ),
    )

    @classmethod
    def specs(cls) -> dict[str, Spec]:
        return {f.name: f.metadata["spec"] for f in dataclasses.fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return dataclasses.asdict(cls())

    @classmethod
    def from_job(cls, job: TuningJob) -> JobConfig:
        return cls(**{name: getattr(job, name) for name in cls.specs()})

    def as_fields(self) -> dict[str, Any]:
        """Model field values (the model has a column per config field)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> JobConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_validate(cls, name: str, value: Any) -> Any:
        """One field on its own (e.g. a rename), or ValidationError on that field."""
        try:
            return _check(cls.specs()[name], value)
        except ValueError as exc:
            raise ValidationError(str(exc), field=name) from None

    @classmethod
    def validate(cls, data: Mapping[str, Any], *, owner=None) -> JobConfig:
        """The complete, normalised configuration, or ValidationError naming every bad field."""
        errors: dict[str, Any] = {}
        specs = cls.specs()
        unknown = sorted(str(key) for key in data if key not in specs)
        for key in unknown:
            errors[key] = ["unknown field"]
        values = {**cls.defaults(), **{k: v for k, v in data.items() if k in specs}}
        for name, spec in specs.items():
            if spec.required and name not in data:
                errors[name] = ["this field is required"]
                continue
            try:
                values[name] = _check(spec, values[name])
            except ValueError as exc:
                errors[name] = [str(exc)]
        _check_trainer_fields(values, errors, owner)
        _check_budget(values, errors)
        if errors:
            raise ValidationError("invalid tuning job", errors=errors)
        values["name"] = values["name"].strip()
        return cls(**values)


def _check(spec: Spec, value: Any) -> Any:
    """One field on its own: type, bounds, length, choices."""
    if value is None and spec.nullable:
        return None
    if value is None and spec.kind == "object" and not spec.required:
        return {}
    if spec.kind == "str":
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a non-empty string")
        if spec.max_length and len(value) > spec.max_length:
            raise ValueError(f"must be at most {spec.max_length} characters")
        return value
    if spec.kind == "choice":
        values = [choice for choice, _ in spec.choices]
        if value not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return value
    if spec.kind == "object":
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
        return spec.check(value) if spec.check else value
    high = spec.high_value()
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        if not spec.low <= value <= high:
            raise ValueError(f"must be between {spec.low:g} and {high:g}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("must be a finite number")
    if (value <= spec.low if spec.low_open else value < spec.low) or value > high:
        raise ValueError(f"must be {'>' if spec.low_open else '>='} {spec.low:g} and <= {high:g}")
    return float(value)


def _check_trainer_fields(values: dict[str, Any], errors: dict[str, Any], owner) -> None:
    """Fields that only make sense for the job's trainer: dataset, fixed values, search space,
    metric and mode (which default to the trainer's)."""
    if "trainer" in errors:
        return
    try:
        trainer = get_trainer(values["trainer"])
    except ValidationError as exc:
        errors.update(exc.as_dict())
        return
    datasets = trainer.dataset_names(owner)
    if "dataset" not in errors and values["dataset"] not in datasets:
        errors["dataset"] = [
            f"unknown dataset {values['dataset']!r} for trainer {trainer.name!r}; choose one of {sorted(datasets)}"
        ]
    if "fixed_hyperparameters" not in errors:
        values["fixed_hyperparameters"] = _fixed_validate(errors, trainer, values["fixed_hyperparameters"])
    if "search_space" not in errors:
        algorithm = values["search_algorithm"] if "search_algorithm" not in errors else "random"
        try:
            values["search_space"] = validate_search_space(
                values["search_space"],
                trainer=trainer,
                fixed=values["fixed_hyperparameters"],
                search_algorithm=algorithm,
                num_samples=values["num_samples"] if "num_samples" not in errors else 1,
            )
        except ValidationError as exc:
            errors.update(exc.as_dict())
    if values["metric"] is None:
        values["metric"] = trainer.default_metric
    if values["mode"] is None:
        values["mode"] = trainer.default_mode
    metric = values["metric"]
    if "metric" not in errors and trainer.metrics and metric not in trainer.metrics:
        errors["metric"] = [f"trainer {trainer.name!r} reports {', '.join(trainer.metrics)}; got {metric!r}"]


def _fixed_validate(errors: dict, trainer: Trainer, fixed: dict[str, Any]) -> dict[str, Any]:
    try:
        return trainer.hyperparameters_validate(fixed, partial=True)
    except ValidationError as exc:
        errors["fixed_hyperparameters"] = exc.as_dict()["hyperparameters"]
        return {}


def _check_budget(values: dict[str, Any], errors: dict[str, Any]) -> None:
    """Bounds that depend on the space: total trials, and the failure cap below them."""
    if {"search_space", "num_samples"} & set(errors) or not values["search_space"]:
        return
    trials = total_trials(values["search_space"], values["num_samples"])
    if trials > _max_trials():
        errors["num_samples"] = [f"the job would run more than {_max_trials()} trials"]
    failed = values["max_failed_trials"]
    if "max_failed_trials" not in errors and failed is not None and failed >= trials:
        errors["max_failed_trials"] = ["must be less than the number of trials"]
