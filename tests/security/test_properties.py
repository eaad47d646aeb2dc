"""Property-based tests (hypothesis): any input to the search-space validator and to the job-create
API gets a valid space / a 201, or a ValidationError / a 400 naming fields, never another
exception or a 5xx."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from runs.trainers.registry import get_trainer
from tests.factories import UserFactory
from tuning.search_space import SEARCH_ALGORITHMS, TYPES, validate_search_space
from tunix_rt.exceptions import ValidationError

TRAINER = get_trainer("sklearn-mlp")
NAMES = [p.name for p in TRAINER.hyperparameters]

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 1e-320, 5e-324, 1e308, 2**31, 2048, 1e-6, 1.0]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
# Specifications close to valid ones, so the search reaches the deep branches of the validator.
spec_keys = st.sampled_from(["type", "low", "high", "q", "step", "values", "value", "extra"])
spec_values = st.one_of(st.sampled_from(TYPES), numbers, st.lists(st.one_of(numbers, scalars), max_size=5), json_values)
specs = st.one_of(
    st.dictionaries(spec_keys, spec_values, max_size=5).map(lambda d: {"type": "uniform", **d}),
    st.builds(
        lambda kind, extra: {"type": kind, **extra},
        st.sampled_from(TYPES),
        st.dictionaries(spec_keys.filter(lambda k: k != "type"), spec_values, max_size=4),
    ),
    json_values,
)
spaces = st.one_of(
    st.dictionaries(st.sampled_from(NAMES), specs, max_size=len(NAMES)),
    st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=6)), specs, max_size=4),
    json_values,
)


def assert_normalised(space: dict) -> None:
    assert isinstance(space, dict) and space
    for name, spec in space.items():
        assert name in NAMES
        assert spec["type"] in TYPES
        if spec["type"] in ("choice", "grid"):
            assert spec["values"] and len(spec["values"]) == len({repr(v) for v in spec["values"]})
        elif spec["type"] != "fixed":
            assert spec["low"] < spec["high"]
            assert all(math.isfinite(spec[key]) for key in ("low", "high"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(space=spaces, algorithm=st.sampled_from(SEARCH_ALGORITHMS), num_samples=st.integers(-5, 5000))
@example(space={"alpha": {"type": "uniform", "low": 0, "high": 1, "q": 5e-324}}, algorithm="random", num_samples=1)
@example(
    space={"alpha": {"type": "quniform", "low": 0, "high": 10, "q": 1e-310}},
    algorithm="random",
    num_samples=1,
)
@example(space={"epochs": {"type": "int", "low": 1, "high": 1e300}}, algorithm="random", num_samples=1)
def test_validator_returns_a_normalised_space_or_a_validation_error(space, algorithm, num_samples):
    try:
        result = validate_search_space(space, trainer=TRAINER, search_algorithm=algorithm, num_samples=num_samples)
    except ValidationError as exc:
        assert set(exc.as_dict()) == {"search_space"}
        return
    assert_normalised(result)
    # Normalising is idempotent: a stored space validates to itself.
    assert validate_search_space(result, trainer=TRAINER, search_algorithm=algorithm, num_samples=1) == result


def _range_spec(param) -> st.SearchStrategy:
    """Specifications inside the parameter's declared bounds (mostly valid)."""
    if param.type == "int":
        high = min(param.high if param.high is not None else 1000, 1000)
        pair = st.tuples(st.integers(param.low or 0, high), st.integers(param.low or 0, high))
        return pair.map(lambda p: {"type": "int", "low": min(p), "high": max(p), "step": st_step(p)})
    low = param.low if param.low is not None else -1e6
    high = param.high if param.high is not None else 1e6
    floats = st.floats(low, high, allow_nan=False)
    return st.builds(
        lambda a, b, kind: {"type": kind, "low": min(a, b), "high": max(a, b)},
        floats,
        floats,
        st.sampled_from(["uniform", "loguniform"]),
    )


def st_step(pair) -> int:
    low, high = min(pair), max(pair)
    return 2 if low % 2 == 0 and high % 2 == 0 and high - low >= 2 else 1


valid_ish_spaces = st.lists(st.sampled_from([p for p in TRAINER.hyperparameters if p.type in ("int", "float")]),
                            min_size=1, max_size=4, unique_by=lambda p: p.name).flatmap(
    lambda params: st.fixed_dictionaries({p.name: _range_spec(p) for p in params})
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(space=valid_ish_spaces)
def test_every_valid_space_converts_to_ray_domains_that_sample_in_range(space):
    try:
        normalised = validate_search_space(space, trainer=TRAINER)
    except ValidationError:
        assume(False)
    from tuning.raytune.runner import to_ray_param_space  # Ray's domains only; no cluster starts

    converted = to_ray_param_space(normalised)
    for name, spec in normalised.items():
        value = converted[name].sample()
        assert spec["low"] <= value <= spec["high"], (name, spec, value)
        TRAINER.hyperparameter(name).validate(value)


job_fields = {
    "name": st.one_of(st.text(max_size=210), json_values),
    "trainer": st.one_of(st.just("sklearn-mlp"), json_values),
    "dataset": st.one_of(st.sampled_from(["digits", "iris"]), json_values),
    "search_space": spaces,
    "fixed_hyperparameters": st.one_of(st.dictionaries(st.sampled_from(NAMES), json_values, max_size=3), json_values),
    "metric": st.one_of(st.sampled_from(["val_accuracy", "val_loss"]), json_values),
    "mode": st.one_of(st.sampled_from(["max", "min"]), json_values),
    "num_samples": st.one_of(st.integers(-3, 2000), json_values),
    "max_concurrent_trials": st.one_of(st.integers(-3, 100), json_values),
    "search_algorithm": st.one_of(st.sampled_from(SEARCH_ALGORITHMS), json_values),
    "scheduler": st.one_of(st.sampled_from(["fifo", "asha"]), json_values),
    "time_budget_s": st.one_of(st.none(), st.integers(-3, 10**7), json_values),
    "cpus_per_trial": st.one_of(numbers, json_values),
    "gpus_per_trial": st.one_of(numbers, json_values),
    "seed": st.one_of(st.none(), numbers, json_values),
    "max_failed_trials": st.one_of(st.none(), st.integers(-3, 2000), json_values),
}
payloads = st.one_of(
    st.fixed_dictionaries(
        {"name": st.just("job"), "trainer": st.just("sklearn-mlp"), "dataset": st.just("digits"),
         "search_space": spaces},
        optional={k: v for k, v in job_fields.items() if k not in ("name", "trainer", "dataset", "search_space")},
    ),
    st.fixed_dictionaries({}, optional={**job_fields, "owner": json_values, "status": json_values}),
    json_values,
)  # fmt: skip


@pytest.fixture
def api(db):
    client = APIClient()
    client.force_authenticate(UserFactory())
    return client


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads)
@example(
    payload={
        "name": "subnormal quantum",
        "trainer": "sklearn-mlp",
        "dataset": "digits",
        "search_space": {"alpha": {"type": "uniform", "low": 0, "high": 10, "q": 1e-310}},
    }
)  # was a 500 (OverflowError in the quantum check)
def test_job_create_api_answers_201_or_a_400_naming_fields(api, payload):
    # allow_nan: NaN and Infinity reach the server as JavaScript writes them (and must be refused).
    response = api.post("/api/tuning/jobs/", json.dumps(payload, allow_nan=True), content_type="application/json")
    assert response.status_code in (201, 400), (response.status_code, response.content[:500])
    body = response.json()
    if response.status_code == 400:
        assert body and (isinstance(body, dict) or isinstance(body, list)), body
        if isinstance(payload, dict) and isinstance(body, dict) and "non_field_errors" not in body:
            assert set(body) - {"detail"} <= set(job_fields) | set(payload), body
    else:
        assert body["status"] == "created"
        assert_normalised(body["search_space"])
