"""The new-job form: turns the posted fields into `tuning_job_create` arguments and back.

Only parsing lives here (text → numbers, lists); every rule about what is a valid job comes from
`tuning.services.tuning_job_create`, the same validator as the API, whose errors are shown next
to their fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.http import QueryDict

from runs.trainers.base import HyperParameter, Trainer

from .models import TuningJob

# How a hyperparameter can be set: fixed, or searched with one of the search-space types.
MODES = (
    ("fixed", "Fixed value"),
    ("loguniform", "Log-uniform"),
    ("uniform", "Uniform"),
    ("int", "Integer range"),
    ("choice", "Choice of values"),
    ("grid", "Grid of values"),
)
MODE_NAMES = {name for name, _ in MODES}
NESTED_ERROR_FIELDS = ("search_space", "fixed_hyperparameters", "hyperparameters")
DEFAULTS = {
    "num_samples": "10",
    "max_concurrent_trials": "2",
    "search_algorithm": TuningJob.SearchAlgorithm.RANDOM,
    "scheduler": TuningJob.Scheduler.FIFO,
}


@dataclass
class HyperParameterRow:
    """One row of the form: a declared hyperparameter, how it is set, the typed text, its errors."""

    param: HyperParameter
    mode: str = "fixed"
    value: str = ""
    low: str = ""
    high: str = ""
    step: str = ""
    values: str = ""
    log: bool = False  # an integer range sampled on a log scale
    errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.param.name

    @property
    def modes(self) -> tuple[tuple[str, str], ...]:
        if self.param.type in ("float",):
            return tuple(m for m in MODES if m[0] != "int")
        if self.param.type == "int":
            return tuple(m for m in MODES if m[0] not in ("loguniform", "uniform"))
        return tuple(m for m in MODES if m[0] in ("fixed", "choice", "grid"))

    @property
    def searched(self) -> bool:
        return self.mode != "fixed"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def default_row(param: HyperParameter) -> HyperParameterRow:
    """Sensible defaults so a first job runs in one click: a log-scale rate is searched
    log-uniformly, a batch size over a few powers of two; the rest is fixed at its default."""
    row = HyperParameterRow(param=param, value=_text(param.default))
    if param.type == "float" and param.log and isinstance(param.default, (int, float)) and param.default > 0:
        low, high = param.default / 10, param.default * 100
        if param.low is not None:
            low = max(low, param.low)
        if param.high is not None:
            high = min(high, param.high)
        row.mode, row.low, row.high = "loguniform", _text(low), _text(high)
    elif param.type == "int" and "batch" in param.name and isinstance(param.default, int) and param.default >= 2:
        candidates = [param.default // 2, param.default, param.default * 2]
        candidates = [
            c for c in candidates if (param.low is None or c >= param.low) and (param.high is None or c <= param.high)
        ]
        row.mode, row.values = "choice", ", ".join(str(c) for c in candidates)
    return row


def initial_data(trainer: Trainer, datasets: tuple[str, ...], dataset: str | None = None) -> dict[str, Any]:
    dataset = dataset if dataset in datasets else (datasets[0] if datasets else "")
    return {
        "name": f"{trainer.name} on {dataset}" if dataset else trainer.name,
        "trainer": trainer.name,
        "dataset": dataset,
        "metric": trainer.default_metric,
        "mode": trainer.default_mode,
        "time_budget_s": "",
        "seed": "",
        "max_failed_trials": "",
        **DEFAULTS,
    }


class JobForm:
    """Holds what the user typed and the errors per field; builds the service's keyword arguments."""

    def __init__(self, trainer: Trainer, data: QueryDict | None = None, *, user=None):
        self.trainer = trainer
        # Only datasets this user may use are offered (and accepted by the service).
        self.datasets = trainer.dataset_names(user)
        self.errors: dict[str, list[str]] = {}
        self.non_field_errors: list[str] = []
        if data is None:
            self.data = initial_data(trainer, self.datasets)
            self.rows = [default_row(p) for p in trainer.hyperparameters]
        else:
            self.data = {key: data.get(key, "").strip() for key in initial_data(trainer, self.datasets)}
            self.data["trainer"] = trainer.name
            self.rows = [self._row_from(p, data) for p in trainer.hyperparameters]

    @staticmethod
    def _row_from(param: HyperParameter, data: QueryDict) -> HyperParameterRow:
        prefix = f"hp.{param.name}."
        mode = data.get(prefix + "mode", "fixed")
        return HyperParameterRow(
            param=param,
            mode=mode if mode in MODE_NAMES else "fixed",
            **{key: data.get(prefix + key, "").strip() for key in ("value", "low", "high", "step", "values")},
            log=data.get(prefix + "log", "") == "on",
        )

    # Parsing: text → typed values. A parse error is reported on its field and nothing is created.

    def _parse(self, param: HyperParameter, text: str, *, as_type: str | None = None) -> Any:
        kind = as_type or param.type
        if kind == "bool":
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"{text!r} is not true or false")
        if kind == "str":
            return text
        if text == "":
            raise ValueError("a value is required")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if kind == "int":
            if not number.is_integer():
                raise ValueError(f"{text!r} is not an integer")
            return int(number)
        return number

    def _optional_int(self, name: str) -> int | None:
        text = self.data.get(name, "")
        if text == "":
            return None
        try:
            return int(text)
        except ValueError:
            self.errors.setdefault(name, []).append(f"{text!r} is not a whole number")
            return None

    def _row_spec(self, row: HyperParameterRow) -> Any:
        param = row.param
        if row.mode == "fixed":
            return self._parse(param, row.value)
        if row.mode in ("choice", "grid"):
            items = [item.strip() for item in row.values.split(",") if item.strip()]
            if not items:
                raise ValueError("list at least one value, separated by commas")
            return {"type": row.mode, "values": [self._parse(param, item) for item in items]}
        number_type = "int" if row.mode == "int" else "float"
        spec: dict[str, Any] = {
            "type": row.mode,
            "low": self._parse(param, row.low, as_type=number_type),
            "high": self._parse(param, row.high, as_type=number_type),
        }
        if row.mode == "int" and row.step:
            spec["step"] = self._parse(param, row.step, as_type="int")
        if row.mode == "int" and row.log:
            spec["log"] = True
        return spec

    def service_arguments(self) -> dict[str, Any] | None:
        """Keyword arguments for `tuning_job_create` (without owner), or None after parse errors."""
        search_space: dict[str, Any] = {}
        fixed: dict[str, Any] = {}
        for row in self.rows:
            try:
                spec = self._row_spec(row)
            except ValueError as exc:
                row.errors.append(str(exc))
                continue
            if row.mode == "fixed":
                fixed[row.name] = spec
            else:
                search_space[row.name] = spec
        arguments: dict[str, Any] = {
            "name": self.data["name"],
            "trainer": self.trainer.name,
            "dataset": self.data["dataset"],
            "search_space": search_space,
            "fixed_hyperparameters": fixed,
            "metric": self.data["metric"] or None,
            "mode": self.data["mode"] or None,
            "search_algorithm": self.data["search_algorithm"],
            "scheduler": self.data["scheduler"],
        }
        for name in ("num_samples", "max_concurrent_trials", "time_budget_s", "seed", "max_failed_trials"):
            value = self._optional_int(name)
            if value is not None:
                arguments[name] = value
            elif name in ("num_samples", "max_concurrent_trials") and name not in self.errors:
                self.errors[name] = ["a whole number is required"]
        if self.has_errors:
            return None
        return arguments

    def add_service_errors(self, errors: dict) -> None:
        """Place the validator's `{field: [messages]}` (with nested per-parameter dicts) on the form."""
        rows = {row.name: row for row in self.rows}
        for key, messages in errors.items():
            if key in NESTED_ERROR_FIELDS and isinstance(messages, dict):
                for name, nested in messages.items():
                    texts = _messages(nested)
                    if name in rows:
                        rows[name].errors.extend(texts)
                    else:
                        self.errors.setdefault(key, []).extend(f"{name}: {t}" for t in texts)
            elif key in ("detail", "non_field_errors"):
                self.non_field_errors.extend(_messages(messages))
            else:
                self.errors.setdefault(key, []).extend(_messages(messages))

    @property
    def has_errors(self) -> bool:
        return bool(self.errors or self.non_field_errors or any(row.errors for row in self.rows))


def _messages(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [m for item in value for m in _messages(item)]
    if isinstance(value, dict):
        return [f"{k}: {m}" for k, v in value.items() for m in _messages(v)]
    return [str(value)]
