"""The Ray boundary: its pure parts (no cluster), and one real in-process experiment (marked
integration) that samples a log-scale int through each search algorithm."""

from __future__ import annotations

import logging

import numpy as np
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


def _log_int_space(**extra) -> dict:
    """hidden_units over [1, 1000] on a log scale (the sklearn-mlp trainer allows 1-2048)."""
    return validate_search_space(
        {"hidden_units": {"type": "int", "low": 1, "high": 1000, "log": True, **extra}}, trainer="sklearn-mlp"
    )


def _assert_log_distributed(values: list[int], low: int = 1, high: int = 1000) -> None:
    assert all(isinstance(v, int) and low <= v <= high for v in values), values
    # Log-uniform over [1, 1000]: about half below 32 (a uniform int: about 3 %).
    assert sum(v < 32 for v in values) > len(values) / 3
    assert max(values) > 300  # the whole range is reached, not only small values


def _samples(domain, count: int = 200) -> list[int]:
    rng = np.random.default_rng(0)
    return [domain.sample(random_state=rng) for _ in range(count)]


def test_log_int_converts_to_ray_lograndint_with_an_inclusive_high():
    domain = to_ray_param_space(_log_int_space())["hidden_units"]
    assert isinstance(domain, tune.search.sample.Integer)
    assert isinstance(domain.get_sampler(), tune.search.sample.LogUniform)
    assert (domain.lower, domain.upper) == (1, 1001)  # Ray's upper bound is exclusive
    _assert_log_distributed(_samples(domain))
    small = to_ray_param_space(validate_search_space(
        {"hidden_layers": {"type": "int", "low": 1, "high": 2, "log": True}}, trainer="sklearn-mlp"
    ))["hidden_layers"]  # fmt: skip
    assert set(_samples(small)) == {1, 2}  # high is sampled too
    uniform = to_ray_param_space({"hidden_units": {"type": "int", "low": 1, "high": 1000}})["hidden_units"]
    with pytest.raises(AssertionError):
        _assert_log_distributed(_samples(uniform))  # the check tells the two scales apart


def test_log_int_with_step_samples_multiples_of_step_within_bounds():
    def domain(high: int):
        spec = {"batch_size": {"type": "int", "low": 8, "high": high, "step": 8, "log": True}}
        return to_ray_param_space(validate_search_space(spec, trainer="sklearn-mlp"))["batch_size"]

    assert set(_samples(domain(64), 400)) == {8, 16, 24, 32, 40, 48, 56, 64}  # both bounds inclusive
    values = _samples(domain(1024), 400)
    assert all(8 <= v <= 1024 and v % 8 == 0 for v in values)
    assert sum(v < 64 for v in values) > len(values) / 3  # a uniform draw: about 5 %


def test_random_search_samples_a_log_int_within_bounds():
    # What BasicVariantGenerator (search_algorithm random) runs for each trial, seeded like a job.
    from ray.tune.search.variant_generator import generate_variants

    space = to_ray_param_space(_log_int_space())
    rng = np.random.default_rng(0)
    values = [next(generate_variants(space, random_state=rng))[1]["hidden_units"] for _ in range(200)]
    _assert_log_distributed(values)


@pytest.mark.django_db
def test_optuna_receives_a_log_int_distribution_and_samples_within_bounds():
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from tuning.raytune.runner import _search_algorithm

    searcher = _search_algorithm(TuningJobFactory(search_algorithm="optuna", seed=0))
    while not isinstance(searcher, OptunaSearch):  # the id-keeping generator and concurrency limiter wrap it
        searcher = searcher.searcher
    assert searcher.set_search_properties("val_accuracy", "max", to_ray_param_space(_log_int_space()))
    # What OptunaSearch passes to trial.suggest_int / study.ask: suggest_int(1, 1000, log=True).
    assert searcher._space == {"hidden_units": optuna.distributions.IntDistribution(1, 1000, log=True)}
    values = [searcher.suggest(f"t{i}")["hidden_units"] for i in range(200)]
    _assert_log_distributed(values)


@pytest.fixture(scope="module")
def local_ray():
    """An embedded one-CPU cluster in this process (no Celery worker needed)."""
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.mark.integration
@pytest.mark.django_db
@pytest.mark.parametrize("search_algorithm", ["random", "optuna"])
def test_a_real_experiment_samples_log_ints_within_bounds(local_ray, tmp_path, search_algorithm):
    from tuning.raytune.runner import _search_algorithm

    job = TuningJobFactory(search_algorithm=search_algorithm, seed=0, max_concurrent_trials=1)
    space = validate_search_space(
        {"hidden_units": {"type": "int", "low": 1, "high": 1000, "log": True}},
        trainer="sklearn-mlp",
        search_algorithm=search_algorithm,
    )

    def trainable(config):
        tune.report({"score": -abs(config["hidden_units"] - 100)})

    tuner = tune.Tuner(
        trainable,
        param_space=to_ray_param_space(space),
        tune_config=tune.TuneConfig(
            metric="score", mode="max", num_samples=12, search_alg=_search_algorithm(job), reuse_actors=True
        ),
        run_config=tune.RunConfig(name=f"log-int-{search_algorithm}", storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert results.num_errors == 0 and len(results) == 12
    values = [result.config["hidden_units"] for result in results]
    assert all(isinstance(v, int) and 1 <= v <= 1000 for v in values), values
    assert len(set(values)) > 1
