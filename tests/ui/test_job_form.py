"""The new-job form and the job actions through the real services (no worker needed: nothing is
started here; starting is covered end to end in test_browser_tuning.py)."""

from __future__ import annotations

import pytest
from django.http import QueryDict

from runs.trainers.registry import all_trainers, get_trainer
from tests.factories import TrialFactory, TuningJobFactory, UserFactory
from tuning import services
from tuning.forms import JobForm
from tuning.models import TuningJob


@pytest.fixture
def owner(db):
    user = UserFactory()
    user.save()  # UserFactory sets the password without saving it
    return user


@pytest.fixture
def client_in(client, owner):
    client.force_login(owner)
    return client


def form_data(**changes) -> dict:
    """What the form posts with its defaults, as a browser would send it."""
    data = {
        "trainer": "sklearn-mlp",
        "dataset": "iris",
        "name": "iris sweep",
        "metric": "val_accuracy",
        "mode": "max",
        "num_samples": "6",
        "max_concurrent_trials": "2",
        "search_algorithm": "random",
        "scheduler": "fifo",
        "time_budget_s": "",
        "seed": "",
        "max_failed_trials": "",
        "action": "save",
        "hp.learning_rate.mode": "loguniform",
        "hp.learning_rate.low": "0.0001",
        "hp.learning_rate.high": "0.1",
        "hp.batch_size.mode": "choice",
        "hp.batch_size.values": "16, 32, 64",
    }
    for name, default in (
        ("hidden_units", "64"),
        ("hidden_layers", "1"),
        ("epochs", "20"),
        ("alpha", "0.0001"),
        ("seed", "0"),
        ("epoch_delay_s", "0"),
    ):
        data[f"hp.{name}.mode"] = "fixed"
        data[f"hp.{name}.value"] = default
    data.update(changes)
    return data


def test_form_defaults_create_a_job_with_the_api_search_space(client_in, owner):
    response = client_in.post("/jobs/new/", form_data())
    job = TuningJob.objects.get(owner=owner)
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.status == TuningJob.Status.CREATED
    assert job.search_space["learning_rate"]["type"] == "loguniform"
    assert job.search_space["batch_size"] == {"type": "choice", "values": [16, 32, 64]}
    assert job.fixed_hyperparameters["epochs"] == 20
    assert (job.num_samples, job.max_concurrent_trials, job.dataset) == (6, 2, "iris")


def test_int_range_with_step_and_optional_fields(client_in, owner):
    client_in.post(
        "/jobs/new/",
        form_data(
            **{
                "hp.hidden_units.mode": "int",
                "hp.hidden_units.low": "16",
                "hp.hidden_units.high": "128",
                "hp.hidden_units.step": "16",
                "time_budget_s": "600",
                "seed": "7",
                "max_failed_trials": "2",
            }
        ),
    )
    job = TuningJob.objects.get(owner=owner)
    assert job.search_space["hidden_units"] == {"type": "int", "low": 16, "high": 128, "step": 16}
    assert (job.time_budget_s, job.seed, job.max_failed_trials) == (600, 7, 2)


def _log_toggle(page: str, name: str) -> str:
    start = page.index(f'name="hp.{name}.log"')
    return page[page.rindex("<input", 0, start) : page.index(">", start) + 1]


def test_log_scale_int_round_trips_through_the_job_page_and_its_clone(client_in, owner):
    page = client_in.get("/jobs/new/").content.decode()
    assert "checked" not in _log_toggle(page, "hidden_units")  # off unless asked for
    log_int = {"hp.hidden_units.mode": "int", "hp.hidden_units.low": "4", "hp.hidden_units.high": "256"}
    response = client_in.post("/jobs/new/", form_data(**log_int, **{"hp.hidden_units.log": "on"}))
    job = TuningJob.objects.get(owner=owner)
    assert response.status_code == 302
    assert job.search_space["hidden_units"] == {"type": "int", "low": 4, "high": 256, "log": True}
    assert "int 4 … 256 log scale" in client_in.get(f"/jobs/{job.pk}/").content.decode()
    client_in.post(f"/jobs/{job.pk}/clone/")
    clone = TuningJob.objects.exclude(pk=job.pk).get()
    assert clone.search_space["hidden_units"] == job.search_space["hidden_units"]
    # Without the toggle the same range is a plain (uniform) int.
    client_in.post("/jobs/new/", form_data(**log_int, name="uniform"))
    assert TuningJob.objects.get(name="uniform").search_space["hidden_units"] == {"type": "int", "low": 4, "high": 256}


def test_refused_log_scale_int_keeps_the_toggle_and_says_why(client_in, owner):
    data = form_data(
        search_algorithm="optuna",
        **{
            "hp.hidden_units.mode": "int",
            "hp.hidden_units.low": "4",
            "hp.hidden_units.high": "256",
            "hp.hidden_units.step": "4",
            "hp.hidden_units.log": "on",
        },
    )
    response = client_in.post("/jobs/new/", data)
    page = response.content.decode()
    assert response.status_code == 400 and not TuningJob.objects.exists()
    row = page[page.index('id="hp-hidden_units"') : page.index('id="hp-hidden_layers"')]
    assert "Optuna cannot sample a log-scale int with a step" in row
    assert "checked" in _log_toggle(page, "hidden_units")
    # Dropping the step is the fix the message names.
    data.pop("hp.hidden_units.step")
    assert client_in.post("/jobs/new/", data).status_code == 302
    assert TuningJob.objects.get().search_space["hidden_units"]["log"] is True


def test_bad_search_space_shows_the_validator_message_next_to_its_parameter(client_in, owner):
    response = client_in.post("/jobs/new/", form_data(**{"hp.learning_rate.low": "-1"}))
    assert response.status_code == 400
    page = response.content.decode()
    row = page[page.index('id="hp-learning_rate"') :]
    row = row[: row.index('<div class="hp-row')] if '<div class="hp-row' in row else row
    assert 'class="errorlist" data-field="learning_rate"' in row
    assert not TuningJob.objects.exists()
    # What the user typed is kept.
    assert 'name="hp.learning_rate.low" value="-1"' in page


def test_text_where_a_number_belongs_is_an_error_on_that_field(client_in, owner):
    response = client_in.post("/jobs/new/", form_data(**{"hp.batch_size.values": "16, lots", "num_samples": "many"}))
    page = response.content.decode()
    assert response.status_code == 400
    assert "&#x27;lots&#x27; is not a number" in page
    assert "&#x27;many&#x27; is not a whole number" in page
    assert not TuningJob.objects.exists()


def test_job_level_errors_sit_next_to_their_fields(client_in, owner):
    response = client_in.post("/jobs/new/", form_data(num_samples="0", dataset="mnist", name=""))
    page = response.content.decode()
    assert response.status_code == 400
    for field in ("num_samples", "dataset"):
        label = page[page.index(f'name="{field}"') - 400 : page.index(f'name="{field}"') + 900]
        assert "errorlist" in label, field
    assert not TuningJob.objects.exists()


def test_everything_fixed_is_refused_with_a_search_space_message(client_in, owner):
    data = form_data(
        **{
            "hp.learning_rate.mode": "fixed",
            "hp.learning_rate.value": "0.001",
            "hp.batch_size.mode": "fixed",
            "hp.batch_size.value": "32",
        }
    )
    response = client_in.post("/jobs/new/", data)
    assert response.status_code == 400
    assert 'id="search-space-errors"' in response.content.decode()


def test_start_on_a_finished_job_answers_409_with_the_reason(client_in, owner):
    job = TuningJobFactory(owner=owner, status=TuningJob.Status.RUNNING)
    TrialFactory(job=job)
    response = client_in.post(f"/jobs/{job.pk}/start/")
    assert response.status_code == 409
    page = response.content.decode()
    assert 'id="action-error"' in page and "only a created job can be started" in page
    # The page is rendered at the action's URL: its links and polling still point at the job page.
    assert f'href="/jobs/{job.pk}/?sort=' in page and "/start/?" not in page
    assert f'hx-get="/jobs/{job.pk}/"' in page


def test_cancel_a_created_job_and_clone_it(client_in, owner):
    job = TuningJobFactory(owner=owner)
    response = client_in.post(f"/jobs/{job.pk}/cancel/", follow=True)
    assert response.status_code == 200 and "Cancellation requested" in response.content.decode()
    job.refresh_from_db()
    assert job.status == TuningJob.Status.CANCELLED
    assert client_in.post(f"/jobs/{job.pk}/cancel/").status_code == 409
    response = client_in.post(f"/jobs/{job.pk}/clone/")
    clone = TuningJob.objects.exclude(pk=job.pk).get()
    assert response["Location"] == f"/jobs/{clone.pk}/"
    assert clone.status == TuningJob.Status.CREATED and clone.owner == owner


def test_actions_are_post_only_and_owner_scoped(client_in, owner):
    other = TuningJobFactory()
    for action in ("start", "cancel", "clone"):
        assert client_in.post(f"/jobs/{other.pk}/{action}/").status_code == 404
    other.refresh_from_db()
    assert other.status == TuningJob.Status.CREATED
    mine = TuningJobFactory(owner=owner)
    assert client_in.get(f"/jobs/{mine.pk}/start/").status_code == 405


@pytest.mark.parametrize("trainer_name", [t.name for t in all_trainers()])
def test_every_trainers_defaults_launch_in_one_click(owner, trainer_name):
    """The form's defaults, submitted untouched, are a valid job for every installed trainer."""
    trainer = get_trainer(trainer_name)
    defaults = JobForm(trainer)
    posted = QueryDict(mutable=True)
    posted.update(defaults.data)
    for row in defaults.rows:
        posted[f"hp.{row.name}.mode"] = row.mode
        for key in ("value", "low", "high", "step", "values"):
            posted[f"hp.{row.name}.{key}"] = getattr(row, key)
    form = JobForm(trainer, posted)
    arguments = form.service_arguments()
    assert arguments is not None, [(r.name, r.errors) for r in form.rows if r.errors] or form.errors
    job = services.tuning_job_create(owner=owner, **arguments)
    assert job.search_space
