"""What a trainer is: a named plugin with a declared hyperparameter schema.

This module is pure Python and imports no ML library, so the web process can list trainers and
validate hyperparameters. Trainers import their heavy libraries inside `train`/`evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

PARAM_TYPES = ("float", "int", "str", "bool")


@dataclass(frozen=True)
class HyperParameter:
    """One declared hyperparameter: name, type, allowed range or choices, default, description."""

    name: str
    type: str
    default: Any
    description: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    # A hint for forms and search-space defaults: sample this parameter on a log scale.
    log: bool = False

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ValueError(f"{self.name}: type must be one of {PARAM_TYPES}")
        if self.default is not None:
            self.validate(self.default)

    def validate(self, value: Any) -> Any:
        """Return the value coerced to this parameter's type, or raise ValueError saying why."""
        if self.type == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"must be a boolean, got {_describe(value)}")
            return value
        if self.type == "str":
            if not isinstance(value, str):
                raise ValueError(f"must be a string, got {_describe(value)}")
            if len(value) > 10_000:
                raise ValueError("must be at most 10000 characters")
        elif self.type == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"must be an integer, got {_describe(value)}")
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(f"must be an integer, got {value}")
                value = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"must be a number, got {_describe(value)}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of {list(self.choices)}, got {value!r}")
        if self.low is not None and value < self.low:
            raise ValueError(f"must be >= {self.low}, got {value}")
        if self.high is not None and value > self.high:
            raise ValueError(f"must be <= {self.high}, got {value}")
        return value

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "description": self.description,
            "low": self.low,
            "high": self.high,
            "choices": list(self.choices) if self.choices is not None else None,
            "log": self.log,
        }


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


@dataclass
class EvaluationResult:
    """What a trainer's evaluation returns: held-out metrics and which one is the primary score."""

    metrics: dict[str, float]
    primary_metric: str
    details: list[dict] = field(default_factory=list)

    @property
    def primary_score(self) -> float:
        return float(self.metrics[self.primary_metric])


class RunCancelled(Exception):
    """Raised inside a run when its cancellation was requested."""


class RunStoppedEarly(RunCancelled):
    """Raised by `ctx.report` when a tuning scheduler stopped the run's trial early. A trainer that
    can evaluate the model it has catches it in its loop and returns its state: the run is then
    evaluated and ends `stopped` with its evaluation. Left uncaught, the run ends `stopped`
    without one (like a cancel, but not a user's)."""


class TrainingFailed(Exception):
    """A trainer's own account of why a run failed. The run's error message is `str(exc)` as is,
    and its traceback excerpt is `detail` (e.g. the tail of a command's stderr), not the Python
    traceback of the trainer."""

    def __init__(self, message: str, *, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class RunContext:
    """What a trainer sees of the run it executes. Built by `runs.execution`."""

    def __init__(
        self,
        *,
        run_id: int,
        hyperparameters: Mapping[str, Any],
        dataset: str,
        output_dir: Path,
        report: Callable[[int, dict[str, float]], None],
        log: Callable[[str, str], None],
        should_stop: Callable[[], bool],
    ):
        self.run_id = run_id
        self.hyperparameters = dict(hyperparameters)
        self.dataset = dataset
        self.output_dir = output_dir
        self._report = report
        self._log = log
        self._should_stop = should_stop

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of one step (epoch). Raises RunCancelled if the run was cancelled,
        RunStoppedEarly if a tuning scheduler stopped it."""
        self._report(step, {k: float(v) for k, v in metrics.items()})
        if self._should_stop():
            raise RunCancelled()

    def log(self, line: str, stream: str = "stdout") -> None:
        self._log(line, stream)

    def should_stop(self) -> bool:
        return self._should_stop()


class Trainer:
    """Base class of trainer plugins. Subclasses set the class attributes and implement
    `train` (report metrics every epoch through `ctx.report`) and `evaluate` (held-out data)."""

    name: ClassVar[str]
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    hyperparameters: ClassVar[tuple[HyperParameter, ...]] = ()
    datasets: ClassVar[tuple[str, ...]] = ()
    # The metric a tuning job optimises by default, and its direction.
    default_metric: ClassVar[str] = ""
    default_mode: ClassVar[str] = "max"
    # Metrics reported per epoch (documented for users choosing a tuning objective).
    metrics: ClassVar[tuple[str, ...]] = ()
    # Early stopping (ASHA, median rule) judges trials at intermediate reports. A metric that only
    # becomes informative late (exact match) may name a cheap stand-in here that ranks trials as it
    # will, in the same direction: {"accuracy": "answer_token_accuracy"}. The job still optimises,
    # records and picks its best run by its own metric.
    early_stopping_metrics: ClassVar[dict[str, str]] = {}

    def dataset_names(self, user=None) -> tuple[str, ...]:
        """Datasets this user's runs may name (trainers with user data filter by owner)."""
        return self.datasets

    def hyperparameter(self, name: str) -> HyperParameter | None:
        return next((p for p in self.hyperparameters if p.name == name), None)

    def validate(self, *, dataset: str, hyperparameters: Any, user=None) -> dict[str, Any]:
        """Return the complete hyperparameters (defaults filled in), or raise ValidationError
        with one message per offending field."""
        from tunix_rt.exceptions import ValidationError

        names = self.dataset_names(user)
        if dataset not in names:
            raise ValidationError(
                f"unknown dataset {dataset!r} for trainer {self.name!r}; choose one of {sorted(names)}",
                field="dataset",
            )
        values = self.hyperparameters_validate(hyperparameters)
        self.check_combination(values)
        return values

    def hyperparameters_validate(self, hyperparameters: Any, *, partial: bool = False) -> dict[str, Any]:
        """Each value checked against its declaration; with `partial`, only the given ones (a
        job's fixed values), else completed with defaults. ValidationError on `hyperparameters`."""
        from tunix_rt.exceptions import ValidationError

        if not isinstance(hyperparameters, dict):
            raise ValidationError("must be a JSON object of name: value", field="hyperparameters")
        errors = {}
        values = {}
        for name, value in hyperparameters.items():
            param = self.hyperparameter(name)
            if param is None:
                known = ", ".join(p.name for p in self.hyperparameters)
                errors[name] = f"unknown hyperparameter for trainer {self.name!r} (known: {known})"
                continue
            try:
                values[name] = param.validate(value)
            except ValueError as exc:
                errors[name] = str(exc)
        if errors:
            raise ValidationError(
                "invalid hyperparameters",
                errors={"hyperparameters": {name: [message] for name, message in errors.items()}},
            )
        if not partial:
            for param in self.hyperparameters:
                values.setdefault(param.name, param.default)
        return values

    def check_combination(self, values: dict[str, Any]) -> None:
        """Hook for constraints that span several hyperparameters; raise ValidationError."""

    # Hyperparameters that count the steps a run reports, in order of preference.
    STEP_COUNT_HYPERPARAMETERS: ClassVar[tuple[str, ...]] = ("epochs", "steps", "max_steps", "num_epochs")

    def expected_steps(self, hyperparameters: Mapping[str, Any]) -> int | None:
        """How many steps a run with these hyperparameters reports (a progress bar's total), when
        known. Override when the count is not a single `epochs`/`steps` hyperparameter."""
        for name in self.STEP_COUNT_HYPERPARAMETERS:
            value = hyperparameters.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    def train(self, ctx: RunContext) -> Any:
        raise NotImplementedError

    def evaluate(self, ctx: RunContext, state: Any) -> EvaluationResult:
        raise NotImplementedError

    def describe(self, user=None) -> dict:
        return {
            "name": self.name,
            "title": self.title or self.name,
            "description": self.description,
            "datasets": list(self.dataset_names(user)),
            "default_metric": self.default_metric,
            "default_mode": self.default_mode,
            "metrics": list(self.metrics),
            "hyperparameters": [p.as_dict() for p in self.hyperparameters],
        }
