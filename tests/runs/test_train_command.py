from __future__ import annotations

import io
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from runs.management.commands.train import parse_param
from runs.models import Run
from tests.conftest import ROOT, subprocess_env
from tests.factories import UserFactory


def train(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("train", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_train_runs_inline_with_a_progress_bar_and_prints_the_evaluation():
    owner = UserFactory(username="alice")

    out, err = train(
        "sklearn-mlp", "--dataset", "iris", "--param", "epochs=4", "--param", "learning_rate=0.01", "--user", "alice"
    )

    run = Run.objects.get()
    assert (run.owner, run.status, run.hyperparameters["epochs"]) == (owner, Run.Status.SUCCEEDED, 4)
    assert run.metric_points.count() == 4
    assert f"run {run.pk} succeeded" in out
    assert "accuracy" in out and "macro_f1" in out and " *" in out
    assert "4/4" in err and "100%" in err  # tqdm's bar over the epochs


@pytest.mark.django_db
def test_train_defaults_to_the_first_superuser_and_runs_command_trainers():
    admin = UserFactory(is_superuser=True, is_staff=True)

    out, _ = train("quadratic", "--dataset", "offset", "--param", "epochs=3", "--no-progress")

    assert Run.objects.get().owner == admin
    assert "loss" in out and "distance" in out


@pytest.mark.django_db
def test_train_exits_non_zero_when_the_run_fails():
    UserFactory(username="bob")
    with pytest.raises(CommandError, match=r"run \d+ failed: command exited with status 1"):
        train("quadratic", "--dataset", "bowl", "--param", "crash_at_epoch=1", "--user", "bob", "--no-progress")
    assert Run.objects.get().status == Run.Status.FAILED


@pytest.mark.django_db
def test_train_rejects_bad_hyperparameters_naming_each_one():
    UserFactory(username="bob")
    with pytest.raises(CommandError) as info:
        train("sklearn-mlp", "--dataset", "digits", "--param", "epochs=0", "--param", "colour=red", "--user", "bob")
    assert "hyperparameters.epochs: must be >= 1" in str(info.value)
    assert "hyperparameters.colour: unknown hyperparameter" in str(info.value)
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_train_needs_an_owner():
    with pytest.raises(CommandError, match="no superuser"):
        train("quadratic", "--dataset", "bowl")
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        train("quadratic", "--dataset", "bowl", "--user", "nobody")


def test_param_values_are_read_as_json_when_they_parse():
    assert parse_param("learning_rate=0.01") == ("learning_rate", 0.01)
    assert parse_param("evaluate=false") == ("evaluate", False)
    assert parse_param("spawn=child") == ("spawn", "child")
    assert parse_param("note=a=b") == ("note", "a=b")
    with pytest.raises(CommandError):
        parse_param("epochs")


@pytest.mark.django_db(transaction=True)
def test_manage_py_train_exit_status(tmp_path):
    UserFactory(username="carol")
    env = subprocess_env()
    ok = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "train",
            "quadratic",
            "--dataset",
            "bowl",
            "--user",
            "carol",
            "--param",
            "epochs=2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    failed = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "train",
            "quadratic",
            "--dataset",
            "bowl",
            "--user",
            "carol",
            "--param",
            "evaluate=false",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "succeeded" in ok.stdout
    assert failed.returncode == 1
    assert "without printing an evaluation line" in failed.stderr
