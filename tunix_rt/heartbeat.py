"""One heartbeat thread for runs and tuning jobs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Calls `beat()` every HEARTBEAT_INTERVAL_S from a daemon thread until stopped. A failing
    beat (the database unreachable) is logged and tried again; a beat that returns False (its
    record is no longer ours) calls `on_lost()` and ends the thread."""

    def __init__(self, name: str, beat: Callable[[], bool | None], on_lost: Callable[[], None] | None = None):
        super().__init__(name=name, daemon=True)
        self.beat = beat
        self.on_lost = on_lost
        self.lost = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(settings.TUNIX_RT["HEARTBEAT_INTERVAL_S"]):
                try:
                    alive = self.beat()
                except Exception:
                    logger.exception("%s: could not write the heartbeat", self.name)
                    continue
                if alive is False:
                    self.lost = True
                    if self.on_lost is not None:
                        self.on_lost()
                    return
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
