from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Training runs"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
