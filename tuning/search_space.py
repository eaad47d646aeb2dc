"""Search spaces: the JSON format users write, validated in pure Python (no Ray import).

A search space maps hyperparameter names of the job's trainer to a specification::

    {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
     "batch_size": {"type": "choice", "values": [16, 32, 64]},
     "hidden_units": {"type": "int", "low": 16, "high": 256, "step": 16},
     "alpha": {"type": "uniform", "low": 0, "high": 0.01, "q": 0.001},
     "hidden_layers": {"type": "grid", "values": [1, 2]},
     "seed": {"type": "fixed", "value": 0}}

`validate_search_space` returns the normalised space (canonical type names, values coerced to the
trainer's declared types) or raises `ValidationError` with one message per parameter. The
conversion to Ray's `tune.*` domains lives in `tuning/raytune/runner.py` and only ever sees a
normalised space. docs/tuning.md is the reference for users.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings

from runs.trainers.base import HyperParameter, Trainer
from tunix_rt.exceptions import ValidationError

# Canonical types after normalisation; "q" on uniform/loguniform selects the quantized form.
TYPES = ("choice", "uniform", "quniform", "loguniform", "qloguniform", "int", "grid", "fixed")
_KEYS = {
    "choice": {"values"},
    "grid": {"values"},
    "uniform": {"low", "high", "q"},
    "quniform": {"low", "high", "q"},
    "loguniform": {"low", "high", "q"},
    "qloguniform": {"low", "high", "q"},
    "int": {"low", "high", "step", "log"},
    "fixed": {"value"},
}
SEARCH_ALGORITHMS = ("random", "grid", "optuna")
_QUANTUM_TOLERANCE = 1e-9

DEFAULT_LIMITS = {
    # Parameters in one search space.
    "MAX_PARAMETERS": 32,
    # Values in one `choice` or `grid` parameter.
    "MAX_CHOICE_VALUES": 256,
    # Trials one job may run: num_samples, and (product of grid sizes) x num_samples.
    "MAX_TRIALS": 10_000,
}


def limit(name: str) -> int:
    """A tuning bound from settings.TUNIX_RT_TUNING (documented in docs/tuning.md)."""
    return getattr(settings, "TUNIX_RT_TUNING", {}).get(name, DEFAULT_LIMITS.get(name))


class _Invalid(Exception):
    pass


def validate_search_space(
    space: Any,
    *,
    trainer: Trainer | str,
    fixed: dict[str, Any] | None = None,
    search_algorithm: str = "random",
    num_samples: int = 1,
) -> dict[str, dict[str, Any]]:
    """Return the normalised search space, or raise ValidationError on `search_space`."""
    if isinstance(trainer, str):
        from runs.trainers.registry import get_trainer

        trainer = get_trainer(trainer)
    if not isinstance(space, dict):
        _whole("must be a JSON object mapping hyperparameter names to specifications")
    if not space:
        _whole("must name at least one hyperparameter to tune")
    if len(space) > limit("MAX_PARAMETERS"):
        _whole(f"at most {limit('MAX_PARAMETERS')} parameters; got {len(space)}")

    fixed = fixed if isinstance(fixed, dict) else {}
    errors: dict[str, list[str]] = {}
    normalised: dict[str, dict[str, Any]] = {}
    for name, spec in space.items():
        try:
            param = trainer.hyperparameter(name) if isinstance(name, str) else None
            if param is None:
                known = ", ".join(p.name for p in trainer.hyperparameters)
                raise _Invalid(f"not a hyperparameter of trainer {trainer.name!r} (known: {known})")
            if name in fixed:
                raise _Invalid("also set in fixed_hyperparameters; tune it or fix it, not both")
            normalised[name] = _parameter(spec, param, search_algorithm)
        except _Invalid as exc:
            errors[str(name)] = [str(exc)]
    if errors:
        raise ValidationError("invalid search space", errors={"search_space": errors})

    if not any(spec["type"] != "fixed" for spec in normalised.values()):
        _whole("every parameter is fixed; at least one must vary")
    combinations = grid_size(normalised)
    samples = num_samples if isinstance(num_samples, int) and num_samples > 0 else 1
    if combinations * samples > limit("MAX_TRIALS"):
        _whole(
            f"grid of {combinations} combinations x num_samples {samples} = {combinations * samples} trials, "
            f"more than the limit of {limit('MAX_TRIALS')}"
        )
    return normalised


def _whole(message: str):
    raise ValidationError(message, errors={"search_space": [message]})


def _parameter(spec: Any, param: HyperParameter, search_algorithm: str) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise _Invalid('must be an object such as {"type": "uniform", "low": 0, "high": 1}')
    kind = spec.get("type")
    if kind not in TYPES:
        raise _Invalid(f"type must be one of {', '.join(TYPES)}; got {kind!r}")
    unknown = set(spec) - _KEYS[kind] - {"type"}
    if unknown:
        raise _Invalid(f"unknown keys for type {kind}: {', '.join(sorted(map(str, unknown)))}")

    if search_algorithm == "grid" and kind == "choice":
        kind = "grid"  # grid search tries every value of a choice
    if search_algorithm == "grid" and kind not in ("grid", "fixed"):
        raise _Invalid(f"grid search needs discrete values: use type grid or fixed, not {kind}")
    if search_algorithm == "optuna" and kind == "grid":
        raise _Invalid("Optuna cannot run a grid; use type choice (or search_algorithm grid)")

    if kind == "fixed":
        if "value" not in spec:
            raise _Invalid("type fixed needs a value")
        return {"type": "fixed", "value": _value(param, spec["value"], "value")}
    if kind in ("choice", "grid"):
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise _Invalid(f"type {kind} needs a non-empty list of values")
        if len(values) > limit("MAX_CHOICE_VALUES"):
            raise _Invalid(f"at most {limit('MAX_CHOICE_VALUES')} values; got {len(values)}")
        coerced = [_value(param, v, f"values[{i}]") for i, v in enumerate(values)]
        if len({repr(v) for v in coerced}) != len(coerced):
            raise _Invalid("values must be distinct")
        return {"type": kind, "values": coerced}
    if kind == "int":
        return _int_range(spec, param, search_algorithm)
    return _float_range(spec, kind, param)


def _value(param: HyperParameter, value: Any, where: str) -> Any:
    try:
        return param.validate(value)
    except ValueError as exc:
        raise _Invalid(f"{where} {exc}") from None


def _number(spec: dict, key: str) -> float:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"{key} must be a number")
    if not math.isfinite(value):
        raise _Invalid(f"{key} must be a finite number")
    return value


def _bounds(spec: dict, param: HyperParameter) -> tuple[float, float]:
    low, high = _number(spec, "low"), _number(spec, "high")
    if not low < high:
        raise _Invalid(f"low must be less than high (got low={low}, high={high})")
    if param.low is not None and low < param.low:
        raise _Invalid(f"low must be >= {param.low} for {param.name}")
    if param.high is not None and high > param.high:
        raise _Invalid(f"high must be <= {param.high} for {param.name}")
    return low, high


def _is_multiple(value: float, quantum: float) -> bool:
    ratio = value / quantum
    if not math.isfinite(ratio):  # a subnormal quantum overflows the ratio; such a q is never valid
        return False
    return abs(ratio - round(ratio)) <= _QUANTUM_TOLERANCE * max(1.0, abs(ratio))


def _float_range(spec: dict, kind: str, param: HyperParameter) -> dict[str, Any]:
    if param.type != "float":
        # A log-scale float rounded to an integer is a log-scale int: point there, not at a rounding.
        hint = "use type choice"
        if param.type == "int":
            hint = 'use {"type": "int", "log": true}' if kind in ("loguniform", "qloguniform") else "use type int"
        raise _Invalid(f"{param.name} is of type {param.type}; {kind} samples floats ({hint})")
    low, high = _bounds(spec, param)
    log = kind in ("loguniform", "qloguniform")
    if log and low <= 0:
        raise _Invalid(f"{kind} needs low > 0 (got {low})")
    quantized = kind.startswith("q") or "q" in spec
    out: dict[str, Any] = {"type": ("qloguniform" if log else "quniform") if quantized else kind}
    out.update(low=float(low), high=float(high))
    if quantized:
        if "q" not in spec:
            raise _Invalid(f"type {kind} needs q (the quantum)")
        q = _number(spec, "q")
        if q <= 0 or q > high - low:
            raise _Invalid(f"q must be > 0 and at most high - low ({high - low})")
        if not (_is_multiple(low, q) and _is_multiple(high, q)):
            raise _Invalid(f"low and high must be multiples of q={q} so sampled values stay in range")
        out["q"] = float(q)
    return out


def _int_range(spec: dict, param: HyperParameter, search_algorithm: str) -> dict[str, Any]:
    if param.type not in ("int", "float"):
        raise _Invalid(f"{param.name} is of type {param.type}; int samples integers (use type choice)")
    for key in ("low", "high"):
        value = _number(spec, key)
        if isinstance(value, float) and not value.is_integer():
            raise _Invalid(f"{key} must be an integer")
    low, high = (int(b) for b in _bounds(spec, param))
    out: dict[str, Any] = {"type": "int", "low": low, "high": high}
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise _Invalid(f"log must be true or false (got {log!r})")
    if log and low < 1:
        raise _Invalid(f"a log-scale int needs low >= 1 (got {low})")
    step = spec.get("step", 1)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise _Invalid("step must be a positive integer")
    if step > 1:
        if step > high - low:
            raise _Invalid(f"step must be at most high - low ({high - low})")
        if low % step or high % step:
            raise _Invalid(f"low and high must be multiples of step={step}")
        # Optuna's IntDistribution refuses log=True with a step other than 1.
        if log and search_algorithm == "optuna":
            raise _Invalid("Optuna cannot sample a log-scale int with a step; drop step or use search_algorithm random")
        out["step"] = step
    if log:
        out["log"] = True  # absent when false, so spaces saved before log existed stay as they were
    return out


def grid_size(space: dict[str, dict[str, Any]]) -> int:
    """Combinations one pass over the grid parameters of a normalised space yields."""
    return math.prod(len(spec["values"]) for spec in space.values() if spec["type"] == "grid")


def total_trials(space: dict[str, dict[str, Any]], num_samples: int) -> int:
    """How many trials Tune will run for this space (grid combinations x num_samples)."""
    return grid_size(space) * num_samples
