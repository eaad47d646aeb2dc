"""The Ray boundary's pure parts (importing Ray is fine here; nothing starts a cluster)."""

from __future__ import annotations

import pytest
from ray import tune

from tests.factories import TuningJobFactory
from tuning.raytune.runner import check_resources, to_ray_param_space
from tuning.search_space import validate_search_space


def test_param_space_conversion_respects_inclusive_int_bounds():
    space = validate_search_space(
        {
            "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
            "batch_size": {"type": "choice", "values": [16, 32]},
            "hidden_units": {"type": "int", "low": 16, "high": 64, "step": 16},
            "hidden_layers": {"type": "int", "low": 1, "high": 2},
            "alpha": {"type": "uniform", "low": 0, "high": 0.01, "q": 0.001},
            "epochs": {"type": "grid", "values": [1, 2]},
            "seed": {"type": "fixed", "value": 3},
        },
        trainer="sklearn-mlp",
    )
    converted = to_ray_param_space(space)
    assert converted["seed"] == 3 and converted["epochs"] == {"grid_search": [1, 2]}
    samples = {name: {converted[name].sample() for _ in range(400)}
               for name in ("hidden_units", "hidden_layers", "batch_size")}  # fmt: skip
    assert samples["hidden_units"] == {16, 32, 48, 64}
    assert samples["hidden_layers"] == {1, 2}  # high is inclusive although Ray's randint is not
    assert samples["batch_size"] == {16, 32}
    for _ in range(200):
        assert 1e-4 <= converted["learning_rate"].sample() <= 1e-1
        alpha = converted["alpha"].sample()
        assert 0 <= alpha <= 0.01 + 1e-12 and abs(alpha / 0.001 - round(alpha / 0.001)) < 1e-6
    assert isinstance(converted["learning_rate"], tune.search.sample.Float)


@pytest.mark.django_db
def test_jobs_asking_for_more_than_the_cluster_are_refused():
    check_resources(TuningJobFactory(cpus_per_trial=2.0), {"CPU": 2.0})
    with pytest.raises(ValueError, match="1 GPU"):
        check_resources(TuningJobFactory(gpus_per_trial=1.0), {"CPU": 2.0})
    with pytest.raises(ValueError, match="4 CPU"):
        check_resources(TuningJobFactory(cpus_per_trial=4.0), {"CPU": 2.0})
