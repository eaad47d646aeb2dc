from __future__ import annotations

import pytest
from django.test import override_settings

from runs.trainers.registry import get_trainer
from tuning.search_space import total_trials, validate_search_space
from tunix_rt.exceptions import ValidationError

TRAINER = "sklearn-mlp"


def errors_of(space, **kwargs):
    with pytest.raises(ValidationError) as info:
        validate_search_space(space, trainer=kwargs.pop("trainer", TRAINER), **kwargs)
    return info.value.as_dict()["search_space"]


def test_brief_example_is_normalised():
    space = {
        "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
        "batch_size": {"type": "choice", "values": [16, 32, 64]},
        "hidden_units": {"type": "int", "low": 16, "high": 256, "step": 16},
        "alpha": {"type": "uniform", "low": 0, "high": 0.01, "q": 0.001},
        "hidden_layers": {"type": "grid", "values": [1, 2]},
        "seed": {"type": "fixed", "value": 0},
    }
    assert validate_search_space(space, trainer=TRAINER) == {
        "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
        "batch_size": {"type": "choice", "values": [16, 32, 64]},
        "hidden_units": {"type": "int", "low": 16, "high": 256, "step": 16},
        "alpha": {"type": "quniform", "low": 0.0, "high": 0.01, "q": 0.001},
        "hidden_layers": {"type": "grid", "values": [1, 2]},
        "seed": {"type": "fixed", "value": 0},
    }


def test_values_are_coerced_to_the_trainer_types_and_trainer_objects_are_accepted():
    space = {"alpha": {"type": "choice", "values": [0, 1]}, "epochs": {"type": "int", "low": 1.0, "high": 3}}
    out = validate_search_space(space, trainer=get_trainer(TRAINER))
    assert out["alpha"]["values"] == [0.0, 1.0] and isinstance(out["alpha"]["values"][0], float)
    assert out["epochs"] == {"type": "int", "low": 1, "high": 3}


def test_grid_search_turns_choices_into_grids():
    out = validate_search_space(
        {"batch_size": {"type": "choice", "values": [8, 16]}}, trainer=TRAINER, search_algorithm="grid"
    )
    assert out["batch_size"]["type"] == "grid"
    assert total_trials(out, 3) == 6


def test_log_scale_int_is_normalised_with_and_without_step():
    space = {
        "hidden_units": {"type": "int", "low": 4, "high": 256, "log": True},
        "batch_size": {"type": "int", "low": 8, "high": 512, "step": 8, "log": True},
        "epochs": {"type": "int", "low": 1, "high": 50, "log": False},
    }
    assert validate_search_space(space, trainer=TRAINER) == {
        "hidden_units": {"type": "int", "low": 4, "high": 256, "log": True},
        "batch_size": {"type": "int", "low": 8, "high": 512, "step": 8, "log": True},
        "epochs": {"type": "int", "low": 1, "high": 50},  # log false is the plain int it always was
    }
    # A clone validates the stored space again: normalising is idempotent.
    out = validate_search_space(space, trainer=TRAINER)
    assert validate_search_space(out, trainer=TRAINER) == out


def test_log_scale_int_without_step_runs_on_optuna_but_a_step_does_not():
    space = {"hidden_units": {"type": "int", "low": 4, "high": 256, "log": True}}
    assert validate_search_space(space, trainer=TRAINER, search_algorithm="optuna") == space
    stepped = {"hidden_units": {"type": "int", "low": 4, "high": 256, "step": 4, "log": True}}
    errors = errors_of(stepped, search_algorithm="optuna")
    assert "Optuna cannot sample a log-scale int with a step" in errors["hidden_units"][0]


BAD_PARAMETERS = [
    ("not_a_param", {"type": "uniform", "low": 0, "high": 1}, "not a hyperparameter"),
    ("alpha", [0, 1], "must be an object"),
    ("alpha", {"type": "normal", "low": 0, "high": 1}, "type must be one of"),
    ("alpha", {"type": "uniform", "low": 1, "high": 0.5}, "low must be less than high"),
    ("alpha", {"type": "uniform", "low": 0.5, "high": 0.5}, "low must be less than high"),
    ("alpha", {"type": "uniform", "low": 0, "high": float("inf")}, "finite"),
    ("alpha", {"type": "uniform", "low": "0", "high": 1}, "low must be a number"),
    ("alpha", {"type": "uniform", "low": 0, "high": 100}, "high must be <= 10.0"),
    ("alpha", {"type": "uniform", "low": 0, "high": 1, "scale": 2}, "unknown keys"),
    ("alpha", {"type": "loguniform", "low": 0, "high": 0.1}, "low > 0"),
    ("alpha", {"type": "quniform", "low": 0, "high": 1}, "needs q"),
    ("alpha", {"type": "uniform", "low": 0, "high": 1, "q": 0}, "q must be > 0"),
    ("alpha", {"type": "uniform", "low": 0.05, "high": 1, "q": 0.1}, "multiples of q"),
    ("batch_size", {"type": "uniform", "low": 8, "high": 64}, "use type int"),
    ("batch_size", {"type": "loguniform", "low": 8, "high": 64}, '{"type": "int", "log": true}'),
    ("batch_size", {"type": "qloguniform", "low": 8, "high": 64, "q": 8}, '{"type": "int", "log": true}'),
    ("seed", {"type": "int", "low": 0, "high": 64, "log": True}, "a log-scale int needs low >= 1 (got 0)"),
    ("batch_size", {"type": "int", "low": 8, "high": 64, "log": "yes"}, "log must be true or false"),
    ("batch_size", {"type": "int", "low": 8, "high": 64, "log": 1}, "log must be true or false"),
    ("batch_size", {"type": "int", "low": 8, "high": 64, "step": 16, "log": True}, "multiples of step"),
    ("batch_size", {"type": "int", "low": 8, "high": 64, "step": 0, "log": True}, "step must be a positive integer"),
    ("alpha", {"type": "uniform", "low": 0.1, "high": 1, "log": True}, "unknown keys for type uniform: log"),
    ("batch_size", {"type": "int", "low": 8.5, "high": 64}, "low must be an integer"),
    ("batch_size", {"type": "int", "low": 8, "high": 64, "step": 0}, "step must be a positive integer"),
    ("batch_size", {"type": "int", "low": 10, "high": 64, "step": 16}, "multiples of step"),
    ("batch_size", {"type": "int", "low": 0, "high": 64}, "low must be >= 1"),
    ("batch_size", {"type": "choice", "values": []}, "non-empty list"),
    ("batch_size", {"type": "choice", "values": [16, 16]}, "distinct"),
    ("batch_size", {"type": "choice", "values": [16, "big"]}, "values[1] must be an integer"),
    ("batch_size", {"type": "grid", "values": [0, 16]}, "values[0] must be >= 1"),
    ("seed", {"type": "fixed"}, "needs a value"),
    ("seed", {"type": "fixed", "value": -1}, "must be >= 0"),
]


@pytest.mark.parametrize(("name", "spec", "message"), BAD_PARAMETERS)
def test_bad_parameter_is_reported_under_its_name(name, spec, message):
    errors = errors_of({name: spec})
    assert list(errors) == [name]
    assert message in errors[name][0]


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ([], "must be a JSON object"),
        ({}, "at least one"),
        ({"seed": {"type": "fixed", "value": 1}}, "every parameter is fixed"),
    ],
)
def test_whole_space_problems_are_reported_on_the_space(space, message):
    errors = errors_of(space)
    assert isinstance(errors, list) and message in errors[0]


def test_parameter_also_fixed_is_refused():
    errors = errors_of({"alpha": {"type": "uniform", "low": 0, "high": 1}}, fixed={"alpha": 0.1})
    assert "fixed_hyperparameters" in errors["alpha"][0]


def test_every_bad_parameter_gets_its_own_message():
    errors = errors_of({"alpha": {"type": "uniform"}, "seed": {"type": "fixed"}, "nope": {}})
    assert set(errors) == {"alpha", "seed", "nope"}


def test_grid_search_refuses_continuous_parameters():
    errors = errors_of({"alpha": {"type": "uniform", "low": 0, "high": 1}}, search_algorithm="grid")
    assert "grid search needs discrete values" in errors["alpha"][0]


def test_optuna_refuses_grid_parameters():
    errors = errors_of({"batch_size": {"type": "grid", "values": [8, 16]}}, search_algorithm="optuna")
    assert "Optuna" in errors["batch_size"][0]


@override_settings(TUNIX_RT_TUNING={"MAX_PARAMETERS": 2, "MAX_CHOICE_VALUES": 3, "MAX_TRIALS": 10})
def test_sizes_are_bounded_by_settings():
    three = {n: {"type": "fixed", "value": 1} for n in ("epochs", "seed", "hidden_layers")}
    assert "at most 2 parameters" in errors_of(three)[0]
    many = {"batch_size": {"type": "choice", "values": [1, 2, 3, 4]}}
    assert "at most 3 values" in errors_of(many)["batch_size"][0]
    grid = {"batch_size": {"type": "grid", "values": [1, 2, 3]}, "epochs": {"type": "grid", "values": [1, 2]}}
    assert "more than the limit of 10" in errors_of(grid, num_samples=2)[0]
    assert validate_search_space(grid, trainer=TRAINER, num_samples=1)


def test_unknown_trainer_is_reported_on_trainer():
    with pytest.raises(ValidationError) as info:
        validate_search_space({"alpha": {"type": "uniform", "low": 0, "high": 1}}, trainer="nope")
    assert "trainer" in info.value.as_dict()


def test_module_does_not_import_ray():
    import subprocess
    import sys

    code = (
        "import django, os, sys; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tunix_rt.test_settings'); "
        "django.setup(); import tuning.search_space, tuning.services, tuning.selectors; "
        "import tuning.api.views, tuning.admin, tuning.tasks; "
        "sys.exit('ray' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
