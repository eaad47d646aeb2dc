"""The trainer registry: built-in trainers, plugins named in settings, and command trainers
declared in a TOML file. Loaded once per process, lazily, and without importing ML libraries."""

from __future__ import annotations

import functools

from django.conf import settings
from django.utils.module_loading import import_string

from tunix_rt.exceptions import ValidationError

from .base import Trainer

BUILTIN_TRAINERS = (
    "runs.trainers.sklearn_mlp.SklearnMLPTrainer",
    "runs.trainers.command.load_command_trainers",
    "runs.trainers.tunix.trainer.load_trainers",
)


@functools.cache
def _registry() -> dict[str, Trainer]:
    trainers: dict[str, Trainer] = {}
    for path in (*BUILTIN_TRAINERS, *settings.TUNIX_RT["TRAINERS"]):
        obj = import_string(path)
        produced = obj() if callable(obj) else obj
        for trainer in produced if isinstance(produced, (list, tuple)) else [produced]:
            if trainer.name in trainers:
                raise RuntimeError(f"two trainers are named {trainer.name!r}")
            trainers[trainer.name] = trainer
    return trainers


def all_trainers() -> list[Trainer]:
    return sorted(_registry().values(), key=lambda t: t.name)


def get_trainer(name: str) -> Trainer:
    """The trainer of that name, or a ValidationError on the `trainer` field."""
    try:
        return _registry()[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_registry()))
        raise ValidationError(f"unknown trainer {name!r}; choose one of: {known}", field="trainer") from None


def reset_registry() -> None:
    """Forget loaded trainers (tests that change the trainer settings)."""
    _registry.cache_clear()
