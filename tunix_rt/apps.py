from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings


class TunixRTConfig(AppConfig):
    """The project's own app: no tables; it makes the folders the settings point at."""

    name = "tunix_rt"
    verbose_name = "Tunix RT"

    def ready(self) -> None:
        data_folders_ensure()


def data_folders_ensure() -> None:
    """The data folder (SQLite database, run outputs, Ray state), static root and, with the
    filesystem broker, its message folders. Settings only name them; a process creates them."""
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for key in ("data_folder_in", "data_folder_out", "control_folder", "processed_folder"):
            (settings.DATA_DIR / options[key]).mkdir(parents=True, exist_ok=True)
