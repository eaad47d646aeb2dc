from __future__ import annotations

import os

import pytest

from runs.trainers.registry import reset_registry

TEST_TRAINERS = "tests.tuning.trainers.load_trainers"

# At collection time, before the session's Celery worker starts: the worker (and the Ray trials
# it starts) read the test trainers from this variable.
_current = [p for p in os.environ.get("TUNIX_RT_TRAINERS", "").split(",") if p]
if TEST_TRAINERS not in _current:
    os.environ["TUNIX_RT_TRAINERS"] = ",".join([*_current, TEST_TRAINERS])


@pytest.fixture(autouse=True)
def test_trainers(settings):
    """The test trainers in this (pytest) process too."""
    trainers = list(settings.TUNIX_RT["TRAINERS"])
    if TEST_TRAINERS not in trainers:
        settings.TUNIX_RT = {**settings.TUNIX_RT, "TRAINERS": [*trainers, TEST_TRAINERS]}
    reset_registry()
    yield
    reset_registry()
