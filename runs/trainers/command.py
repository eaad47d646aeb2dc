"""Command trainers: any executable becomes a trainer, declared in a TOML file (docs/trainers.md).

The program gets its hyperparameters as JSON in `TUNIX_RT_HYPERPARAMETERS` and as `--name=value`
flags, and reports on stdout with JSON lines:

    {"step": 3, "metrics": {"loss": 0.41, "accuracy": 0.87}}
    {"evaluation": {"accuracy": 0.91, "f1": 0.9}, "primary": "accuracy"}

Every stdout and stderr line is also kept as the run's log. The program runs in its own session
(process group); on cancel, timeout or exit, everything it started is ended, including processes
that left the group: its descendants are recorded with psutil while it runs.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections import deque
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .base import PARAM_TYPES, EvaluationResult, HyperParameter, RunCancelled, RunContext, Trainer, TrainingFailed
from .line_protocol import LineProtocol
from .processes import PipeReader, ProcessTree

TRAINER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
DEFAULT_KILL_GRACE_S = 5.0
POLL_INTERVAL_S = 0.1  # how often the loop wakes up without output: cancel and timeout checks
PIPE_DRAIN_AFTER_EXIT_S = 2.0  # an orphan still holding stdout does not keep the run open longer
STDERR_TAIL_LINES = 50
STDERR_LINES_IN_MESSAGE = 5


class CommandTrainerConfigError(ImproperlyConfigured):
    """The command trainers file is invalid; the message names the file and the offending key."""


# --- the TOML file ----------------------------------------------------------------------------

_NUMBER = (int, float)
# key -> (accepted types, required)
_TRAINER_KEYS: dict[str, tuple[tuple[type, ...], bool]] = {
    "title": ((str,), False),
    "description": ((str,), False),
    "argv": ((list,), True),
    "datasets": ((list,), True),
    "default_metric": ((str,), False),
    "default_mode": ((str,), False),
    "metrics": ((list,), False),
    "timeout_s": (_NUMBER, False),
    "kill_grace_s": (_NUMBER, False),
    "env": ((dict,), False),
    "hyperparameters": ((list,), False),
}
_PARAM_KEYS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),
    "type": ((str,), True),
    "default": ((str, int, float, bool), True),
    "description": ((str,), False),
    "low": (_NUMBER, False),
    "high": (_NUMBER, False),
    "choices": ((list,), False),
    "log": ((bool,), False),
}


def _check_table(table: Any, keys: dict, where: str) -> None:
    if not isinstance(table, dict):
        raise CommandTrainerConfigError(f"{where}: must be a table")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise CommandTrainerConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(keys)}")
    for key, (types, required) in keys.items():
        if key not in table:
            if required:
                raise CommandTrainerConfigError(f"{where}.{key}: is required")
            continue
        value = table[key]
        # TOML booleans are Python ints: a number field never takes true/false.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("number" if t in _NUMBER else t.__name__ for t in dict.fromkeys(types))
            raise CommandTrainerConfigError(f"{where}.{key}: must be a {names}, got {value!r}")


def _string_list(value: list, where: str, *, non_empty: bool = True, unique: bool = False) -> tuple[str, ...]:
    if non_empty and not value:
        raise CommandTrainerConfigError(f"{where}: must not be empty")
    if not all(isinstance(item, str) and item for item in value):
        raise CommandTrainerConfigError(f"{where}: must be a list of non-empty strings")
    if unique and len(set(value)) != len(value):
        raise CommandTrainerConfigError(f"{where}: has duplicates")
    return tuple(value)


def _expand(text: str, here: Path) -> str:
    """`{python}`: the interpreter running Tunix RT; `{here}`: the folder of the TOML file."""
    return text.replace("{python}", sys.executable).replace("{here}", str(here))


def _parse_hyperparameter(table: Any, where: str) -> HyperParameter:
    _check_table(table, _PARAM_KEYS, where)
    name, kind = table["name"], table["type"]
    if not PARAM_NAME.fullmatch(name):
        raise CommandTrainerConfigError(f"{where}.name: {name!r} must be an identifier (letters, digits, _)")
    if kind not in PARAM_TYPES:
        raise CommandTrainerConfigError(f"{where}.type: must be one of {list(PARAM_TYPES)}, got {kind!r}")
    low, high = table.get("low"), table.get("high")
    if low is not None and high is not None and low > high:
        raise CommandTrainerConfigError(f"{where}: low ({low}) is above high ({high})")
    if kind in ("str", "bool") and (low is not None or high is not None):
        raise CommandTrainerConfigError(f"{where}: low/high apply to int and float parameters only")
    unbounded = HyperParameter(name, kind, None)
    choices = None
    if "choices" in table:
        if not table["choices"]:
            raise CommandTrainerConfigError(f"{where}.choices: must not be empty")
        try:
            choices = tuple(unbounded.validate(choice) for choice in table["choices"])
        except ValueError as exc:
            raise CommandTrainerConfigError(f"{where}.choices: each {exc}") from None
    try:
        default = unbounded.validate(table["default"])
        return HyperParameter(
            name,
            kind,
            default,
            table.get("description", ""),
            low=low,
            high=high,
            choices=choices,
            log=table.get("log", False),
        )
    except ValueError as exc:
        raise CommandTrainerConfigError(f"{where}.default: {exc}") from None


def _parse_trainer(name: str, table: Any, here: Path, where: str) -> CommandTrainer:
    if not isinstance(name, str) or not TRAINER_NAME.fullmatch(name):
        raise CommandTrainerConfigError(
            f"{where}: the name must be 1-100 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    _check_table(table, _TRAINER_KEYS, where)
    argv = tuple(_expand(arg, here) for arg in _string_list(table["argv"], f"{where}.argv"))
    datasets = _string_list(table["datasets"], f"{where}.datasets", unique=True)
    metrics = _string_list(table.get("metrics", []), f"{where}.metrics", non_empty=False, unique=True)
    mode = table.get("default_mode", "max")
    if mode not in ("max", "min"):
        raise CommandTrainerConfigError(f"{where}.default_mode: must be 'max' or 'min', got {mode!r}")
    for key in ("timeout_s", "kill_grace_s"):
        if key in table and not (math.isfinite(table[key]) and table[key] > 0):
            raise CommandTrainerConfigError(f"{where}.{key}: must be a positive number of seconds")
    env = table.get("env", {})
    for key, value in env.items():
        if not isinstance(value, str):
            raise CommandTrainerConfigError(f"{where}.env.{key}: must be a string")
        if key.startswith("TUNIX_RT_"):
            raise CommandTrainerConfigError(f"{where}.env.{key}: TUNIX_RT_* variables are set by Tunix RT")
    params = tuple(
        _parse_hyperparameter(item, f"{where}.hyperparameters[{i}]")
        for i, item in enumerate(table.get("hyperparameters", []))
    )
    seen: set[str] = set()
    for param in params:
        if param.name in seen:
            raise CommandTrainerConfigError(f"{where}.hyperparameters: {param.name!r} is declared twice")
        seen.add(param.name)
    return CommandTrainer(
        name=name,
        title=table.get("title", ""),
        description=table.get("description", ""),
        argv=argv,
        datasets=datasets,
        default_metric=table.get("default_metric", ""),
        default_mode=mode,
        metrics=metrics,
        timeout_s=float(table["timeout_s"]) if "timeout_s" in table else None,
        kill_grace_s=float(table.get("kill_grace_s", DEFAULT_KILL_GRACE_S)),
        env={key: _expand(value, here) for key, value in env.items()},
        hyperparameters=params,
    )


def parse_command_trainers(path: Path) -> list[CommandTrainer]:
    """Read and validate a command trainers file; CommandTrainerConfigError says what is wrong."""
    try:
        with open(path, "rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise CommandTrainerConfigError(
            f"{path}: command trainers file not found (TUNIX_RT_COMMAND_TRAINERS_FILE; empty disables it)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise CommandTrainerConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"trainers"})
    if unknown:
        raise CommandTrainerConfigError(f"{path}: unknown top-level key(s) {unknown}; declare [trainers.<name>] tables")
    trainers = document.get("trainers", {})
    if not isinstance(trainers, dict):
        raise CommandTrainerConfigError(f"{path}: trainers: must be a table of [trainers.<name>] tables")
    here = Path(path).resolve().parent
    return [_parse_trainer(name, table, here, f"{path}: trainers.{name}") for name, table in trainers.items()]


def load_command_trainers() -> list[CommandTrainer]:
    """The command trainers of TUNIX_RT["COMMAND_TRAINERS_FILE"] (none when it is empty)."""
    path = settings.TUNIX_RT["COMMAND_TRAINERS_FILE"]
    return parse_command_trainers(Path(path)) if path else []


# --- running a command --------------------------------------------------------------------------


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class CommandTrainer(Trainer):
    """A trainer that runs an executable declared in the command trainers file."""

    def __init__(
        self,
        *,
        name: str,
        argv: tuple[str, ...],
        datasets: tuple[str, ...],
        hyperparameters: tuple[HyperParameter, ...] = (),
        title: str = "",
        description: str = "",
        default_metric: str = "",
        default_mode: str = "max",
        metrics: tuple[str, ...] = (),
        timeout_s: float | None = None,
        kill_grace_s: float = DEFAULT_KILL_GRACE_S,
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.argv = argv
        self.datasets = datasets
        self.hyperparameters = hyperparameters
        self.title = title
        self.description = description
        self.default_metric = default_metric
        self.default_mode = default_mode
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.kill_grace_s = kill_grace_s
        self.env = env or {}

    def __repr__(self) -> str:
        return f"CommandTrainer({self.name!r}, argv={list(self.argv)!r})"

    def effective_timeout_s(self) -> float:
        """The trainer's timeout, bounded by TUNIX_RT["COMMAND_TIMEOUT_MAX_S"]."""
        bound = float(settings.TUNIX_RT["COMMAND_TIMEOUT_MAX_S"])
        return min(self.timeout_s, bound) if self.timeout_s else bound

    def command(self, hyperparameters: dict[str, Any]) -> list[str]:
        return [*self.argv, *(f"--{name}={_flag_value(value)}" for name, value in hyperparameters.items())]

    def train(self, ctx: RunContext) -> EvaluationResult:
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **self.env,
            "TUNIX_RT_RUN_ID": str(ctx.run_id),
            "TUNIX_RT_OUTPUT_DIR": str(ctx.output_dir),
            "TUNIX_RT_DATASET": ctx.dataset,
            "TUNIX_RT_HYPERPARAMETERS": json.dumps(ctx.hyperparameters),
            "PYTHONUNBUFFERED": "1",
        }
        argv = self.command(ctx.hyperparameters)
        ctx.log(f"$ {subprocess.list2cmdline(argv)}", "system")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=ctx.output_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise TrainingFailed(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        tree = ProcessTree(proc)
        reader = PipeReader({"stdout": proc.stdout, "stderr": proc.stderr})
        try:
            return self._supervise(ctx, proc, tree, reader)
        finally:
            tree.kill(self.kill_grace_s)
            reader.close()

    def _supervise(
        self, ctx: RunContext, proc: subprocess.Popen, tree: ProcessTree, reader: PipeReader
    ) -> EvaluationResult:
        protocol = LineProtocol(ctx)
        stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        timeout_s = self.effective_timeout_s()
        started = time.monotonic()
        exited_at = None
        while True:
            for stream, line in reader.read(POLL_INTERVAL_S):
                ctx.log(line, stream)
                if stream == "stdout":
                    protocol.feed(line)
                else:
                    stderr_tail.append(line)
            now = time.monotonic()
            if proc.poll() is not None:
                exited_at = exited_at or now
                if not reader.open or now - exited_at > PIPE_DRAIN_AFTER_EXIT_S:
                    break
            else:
                tree.scan_if_due()
            if ctx.should_stop():
                raise RunCancelled()
            if now - started > timeout_s:
                raise TrainingFailed(
                    f"command timed out after {timeout_s:g}s and was stopped", detail="\n".join(stderr_tail)
                )
        if proc.returncode != 0:
            raise TrainingFailed(_exit_message(proc.returncode, stderr_tail), detail="\n".join(stderr_tail))
        if protocol.evaluation is None:
            raise TrainingFailed(
                "the command exited 0 without printing an evaluation line; expected a stdout line like "
                '{"evaluation": {"accuracy": 0.9}, "primary": "accuracy"} (docs/trainers.md)',
                detail="\n".join(stderr_tail),
            )
        return protocol.evaluation

    def evaluate(self, ctx: RunContext, state: EvaluationResult) -> EvaluationResult:
        return state


def _exit_message(returncode: int, stderr_tail: deque[str]) -> str:
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with status {returncode}"
    last = [line for line in stderr_tail if line.strip()][-STDERR_LINES_IN_MESSAGE:]
    return f"command {how}" + (": " + "\n".join(last) if last else " (no stderr output)")
