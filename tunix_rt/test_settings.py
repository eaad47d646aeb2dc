"""Settings for the test suite: the real settings, with test defaults for the environment.

Tests talk to real services: Redis (CELERY_BROKER_URL, database 15 unless set) and the database
from DATABASE_URL (SQLite file under var/test by default; PostgreSQL in CI).
"""

import os
from pathlib import Path

os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("TUNIX_RT_DATA_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

from .settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
