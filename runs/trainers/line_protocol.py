"""The line protocol of command trainers (docs/trainers.md): metric and evaluation messages read
out of a command's stdout lines. Anything else on stdout is ordinary output."""

from __future__ import annotations

import json
import math
from typing import Any

from .base import EvaluationResult, RunContext, TrainingFailed

MAX_METRIC_NAME = 100
MAX_EVALUATION_DETAILS = 1000


class LineProtocol:
    """Reads the metric and evaluation messages out of a command's stdout lines."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.evaluation: EvaluationResult | None = None
        self.line_number = 0

    def feed(self, line: str) -> None:
        self.line_number += 1
        text = line.strip()
        if not text.startswith("{"):
            return
        try:
            message = json.loads(text)
        except ValueError:
            return  # ordinary output that happens to start with a brace
        if not isinstance(message, dict) or not {"metrics", "evaluation"} & message.keys():
            return
        if "metrics" in message:
            self._metrics(message, text)
        else:
            self._evaluation(message, text)

    def _fail(self, why: str, text: str) -> None:
        raise TrainingFailed(f"protocol error on stdout line {self.line_number}: {why}; the line: {text[:300]}")

    def _check_keys(self, message: dict, allowed: set[str], text: str) -> None:
        unknown = sorted(message.keys() - allowed)
        if unknown:
            self._fail(f"unknown key(s) {unknown} (allowed: {sorted(allowed)})", text)

    def _numbers(self, values: Any, what: str, text: str) -> dict[str, float]:
        if not isinstance(values, dict) or not values:
            self._fail(f'"{what}" must be a non-empty object of name: number', text)
        for name, value in values.items():
            if len(name) > MAX_METRIC_NAME:
                self._fail(f"metric name longer than {MAX_METRIC_NAME} characters", text)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                self._fail(f"{what} {name!r} must be a finite number, got {value!r}", text)
        return {name: float(value) for name, value in values.items()}

    def _metrics(self, message: dict, text: str) -> None:
        self._check_keys(message, {"metrics", "step"}, text)
        step = message.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            self._fail('"step" must be an integer >= 0', text)
        self.ctx.report(step, self._numbers(message["metrics"], "metric", text))

    def _evaluation(self, message: dict, text: str) -> None:
        self._check_keys(message, {"evaluation", "primary", "details"}, text)
        if self.evaluation is not None:
            self._fail("a second evaluation line (a run has exactly one evaluation)", text)
        metrics = self._numbers(message["evaluation"], "evaluation metric", text)
        primary = message.get("primary")
        if primary not in metrics:
            self._fail(f'"primary" must name one of the evaluation metrics {sorted(metrics)}, got {primary!r}', text)
        details = message.get("details", [])
        if not isinstance(details, list) or not all(isinstance(item, dict) for item in details):
            self._fail('"details" must be a list of objects', text)
        self.evaluation = EvaluationResult(
            metrics=metrics, primary_metric=primary, details=details[:MAX_EVALUATION_DETAILS]
        )
