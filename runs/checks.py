"""System checks: a broken trainer configuration is reported by `manage.py check` (and at the start
of runserver and workers), not at the first run."""

from __future__ import annotations

from django.core import checks


@checks.register()
def trainers_load(app_configs, **kwargs) -> list[checks.CheckMessage]:
    from .trainers.registry import all_trainers

    try:
        all_trainers()
    except Exception as exc:  # any plugin error: an import error, an invalid TOML file, a duplicate name
        return [
            checks.Error(
                f"the trainers cannot be loaded: {exc}",
                hint="See docs/trainers.md (TUNIX_RT_TRAINERS, TUNIX_RT_COMMAND_TRAINERS_FILE).",
                id="runs.E001",
            )
        ]
    return []
