"""Bad input to POST /api/runs/: a 400 whose body names the field, and nothing written."""

from __future__ import annotations

import pytest

from runs.models import Run

VALID = {"trainer": "sklearn-mlp", "dataset": "digits"}


def body(**changes):
    data = {**VALID, **changes}
    return {key: value for key, value in data.items() if value is not ...}


CASES = [
    # (case id, JSON body or raw bytes, path of the field in the error body, text in its message)
    ("unknown trainer", body(trainer="gpt-7"), ["trainer"], "unknown trainer 'gpt-7'"),
    ("trainer not a string", body(trainer=["sklearn-mlp"]), ["trainer"], "Not a valid string"),
    ("missing trainer", body(trainer=...), ["trainer"], "required"),
    ("unknown dataset", body(dataset="mnist"), ["dataset"], "unknown dataset 'mnist'"),
    ("missing dataset", body(dataset=...), ["dataset"], "required"),
    (
        "unknown hyperparameter",
        body(hyperparameters={"learning_rat": 0.1}),
        ["hyperparameters", "learning_rat"],
        "unknown hyperparameter",
    ),
    (
        "wrong type",
        body(hyperparameters={"batch_size": "large"}),
        ["hyperparameters", "batch_size"],
        "must be an integer",
    ),
    (
        "bool for a number",
        body(hyperparameters={"learning_rate": True}),
        ["hyperparameters", "learning_rate"],
        "number",
    ),
    ("fractional int", body(hyperparameters={"epochs": 2.5}), ["hyperparameters", "epochs"], "must be an integer"),
    ("above range", body(hyperparameters={"learning_rate": 5.0}), ["hyperparameters", "learning_rate"], "<= 1.0"),
    ("below range", body(hyperparameters={"hidden_units": 0}), ["hyperparameters", "hidden_units"], ">= 1"),
    (
        "not in choices",
        {"trainer": "quadratic", "dataset": "bowl", "hyperparameters": {"spawn": "daemon"}},
        ["hyperparameters", "spawn"],
        "must be one of",
    ),
    ("hyperparameters a list", body(hyperparameters=[["epochs", 3]]), ["hyperparameters"], "Expected a dictionary"),
    ("hyperparameters a string", body(hyperparameters='{"epochs": 3}'), ["hyperparameters"], "Expected a dictionary"),
    ("too-long name", body(name="x" * 201), ["name"], "no more than 200 characters"),
    ("unknown field", body(hyperparams={"epochs": 3}), ["hyperparams"], "unknown field"),
    ("body not an object", [VALID], ["non_field_errors"], "Expected a dictionary"),
    ("malformed JSON", b'{"trainer": "sklearn-mlp", "dataset": ', ["detail"], "JSON parse error"),
    ("empty body", b"", ["trainer"], "required"),
]


@pytest.mark.parametrize("data, field_path, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
@pytest.mark.django_db
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(api_client, data, field_path, message):
    if isinstance(data, bytes):
        response = api_client.generic("POST", "/api/runs/", data, content_type="application/json")
    else:
        response = api_client.post("/api/runs/", data, format="json")

    assert response.status_code == 400, response.content
    errors = response.json()
    for key in field_path:
        assert key in errors, errors
        errors = errors[key]
    assert message in str(errors)
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_several_bad_hyperparameters_are_all_named(api_client):
    response = api_client.post(
        "/api/runs/",
        body(hyperparameters={"learning_rate": -1, "batch_size": "x", "nope": 1}),
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()["hyperparameters"]) == {"learning_rate", "batch_size", "nope"}
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_form_encoded_bodies_are_refused(api_client):
    response = api_client.post("/api/runs/", VALID)  # multipart
    assert response.status_code == 415
    assert Run.objects.count() == 0
