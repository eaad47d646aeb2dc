"""The command trainer on real subprocesses: the example script examples/trainers/quadratic.py."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from runs import services
from runs.execution import execute_run
from runs.models import LogLine, Run
from runs.trainers.command import CommandTrainerConfigError, parse_command_trainers
from runs.trainers.registry import get_trainer, reset_registry
from tests.conftest import ROOT, assert_processes_gone, wait_for

QUADRATIC = ROOT / "examples" / "trainers" / "quadratic.py"


@pytest.fixture
def trainers_file(settings, tmp_path):
    """Point the registry at a TOML file written by the test; restore it afterwards."""

    def write(text: str) -> Path:
        path = tmp_path / "trainers.toml"
        path.write_text(text)
        settings.TUNIX_RT = {**settings.TUNIX_RT, "COMMAND_TRAINERS_FILE": str(path)}
        reset_registry()
        return path

    yield write
    reset_registry()


def quadratic_toml(name: str = "quadratic", **options: str) -> str:
    """A trainer running the example script, with its hyperparameters, and options overridden."""
    example = (ROOT / "trainers.toml").read_text()
    head, _, params = example.partition("[[trainers.quadratic.hyperparameters]]")
    params = "[[trainers.quadratic.hyperparameters]]" + params
    lines = [
        f"[trainers.{name}]",
        f'argv = ["{{python}}", "{QUADRATIC}"]',
        'datasets = ["bowl", "offset"]',
        *(f"{key} = {value}" for key, value in options.items()),
    ]
    return "\n".join(lines) + "\n" + params.replace("trainers.quadratic.", f"trainers.{name}.")


def command_toml(code: str, name: str = "script") -> str:
    """A trainer running a Python snippet (flags land in sys.argv, harmlessly)."""
    return f'[trainers.{name}]\nargv = ["{{python}}", "-c", {json.dumps(code)}]\ndatasets = ["none"]\n'


def run_quadratic(user, trainer: str = "quadratic", **hyperparameters) -> Run:
    return services.run_create(
        owner=user, trainer=trainer, dataset="bowl", hyperparameters=hyperparameters, enqueue=False
    )


def helper_pids(run: Run, expected: int = 2, timeout: float = 10) -> list[int]:
    pid_file = Path(run.output_dir) / "helpers.pid"

    def read():
        pids = [int(line) for line in pid_file.read_text().split()] if pid_file.exists() else []
        return pids if len(pids) >= expected else None

    return wait_for(read, timeout=timeout, message="the helper processes to start")


@pytest.mark.django_db
def test_example_command_trainer_reports_metrics_logs_and_evaluation(user):
    run = execute_run(run_quadratic(user, epochs=5, learning_rate=0.2).pk)

    assert run.status == Run.Status.SUCCEEDED, run.error_message
    points = list(run.metric_points.values_list("step", "values"))
    assert [step for step, _ in points] == [1, 2, 3, 4, 5]
    losses = [values["loss"] for _, values in points]
    assert losses == sorted(losses, reverse=True)
    assert run.evaluation.primary_metric == "loss"
    assert run.evaluation.primary_score == pytest.approx(losses[-1])
    assert set(run.evaluation.metrics) == {"loss", "distance"}
    logs = list(run.log_lines.values_list("stream", "text"))
    assert ("stdout", next(t for s, t in logs if t.startswith('{"step": 5'))) in logs
    assert ("stderr", next(t for s, t in logs if t.startswith("epoch 5:"))) in logs
    flags = next(t for s, t in logs if t.startswith("quadratic: run"))
    assert "--learning_rate=0.2" in flags and "--epochs=5" in flags and "--evaluate=true" in flags
    assert (Path(run.output_dir) / "result.json").exists()


@pytest.mark.django_db
def test_learning_rate_changes_the_command_result(user):
    slow = execute_run(run_quadratic(user, learning_rate=0.001, epochs=10).pk)
    fast = execute_run(run_quadratic(user, learning_rate=0.3, epochs=10).pk)
    assert fast.evaluation.primary_score < slow.evaluation.primary_score / 100


@pytest.mark.django_db
def test_crashing_command_fails_with_the_tail_of_stderr(user):
    run = execute_run(run_quadratic(user, epochs=5, crash_at_epoch=2).pk)

    assert run.status == Run.Status.FAILED
    assert run.error_message.startswith("command exited with status 1:")
    assert "RuntimeError: crashing at epoch 2 as asked" in run.error_message
    assert "Traceback (most recent call last)" in run.error_traceback
    assert not hasattr(run, "evaluation") or run.evaluation is None
    assert list(run.metric_points.values_list("step", flat=True)) == [1, 2]


@pytest.mark.django_db
def test_command_exiting_0_without_evaluation_fails_saying_what_was_expected(user):
    run = execute_run(run_quadratic(user, epochs=2, evaluate=False).pk)

    assert run.status == Run.Status.FAILED
    assert "exited 0 without printing an evaluation line" in run.error_message
    assert '{"evaluation":' in run.error_message
    assert not Run.objects.filter(pk=run.pk, evaluation__isnull=False).exists()


@pytest.mark.django_db
def test_timeout_fails_the_run_and_ends_the_whole_process_tree(user, trainers_file):
    trainers_file(quadratic_toml("slow", timeout_s="1.5", kill_grace_s="1"))
    run = run_quadratic(user, "slow", epochs=100, sleep_s=1.0, spawn="escaped")
    started = time.monotonic()

    run = execute_run(run.pk)

    assert run.status == Run.Status.FAILED
    assert run.error_message == "command timed out after 1.5s and was stopped"
    assert time.monotonic() - started < 60  # stopped by the timeout: 100 epochs of 1 s would take 100 s
    pids = helper_pids(run)
    assert len(pids) == 2
    assert_processes_gone(pids)


@pytest.mark.django_db
def test_timeout_is_bounded_by_the_global_maximum(settings, user, trainers_file):
    trainers_file(quadratic_toml("slow", timeout_s="3600"))
    settings.TUNIX_RT = {**settings.TUNIX_RT, "COMMAND_TIMEOUT_MAX_S": 1}

    run = execute_run(run_quadratic(user, "slow", epochs=100, sleep_s=0.5).pk)

    assert run.error_message == "command timed out after 1s and was stopped"


@pytest.mark.django_db(transaction=True)
def test_cancel_ends_the_run_cancelled_and_the_whole_process_tree(user):
    run = run_quadratic(user, epochs=1000, sleep_s=0.2, spawn="escaped")
    pids: list[int] = []

    def cancel_when_helpers_run():
        try:
            pids.extend(helper_pids(run))
            services.run_cancel(run=Run.objects.get(pk=run.pk))
        finally:
            connection.close()

    canceller = threading.Thread(target=cancel_when_helpers_run)
    canceller.start()
    run = execute_run(run.pk)
    canceller.join()

    assert run.status == Run.Status.CANCELLED
    assert len(pids) == 2
    assert_processes_gone(pids)
    assert run.metric_points.exists()
    assert (run.finished_at - run.started_at).total_seconds() < 100  # stopped: 1000 epochs x 0.2 s = 200 s


@pytest.mark.django_db
def test_processes_left_running_after_a_successful_exit_are_ended(user):
    run = execute_run(run_quadratic(user, epochs=1, spawn="child").pk)

    assert run.status == Run.Status.SUCCEEDED, run.error_message
    assert_processes_gone(helper_pids(run))


@pytest.mark.django_db
def test_heavy_output_on_both_pipes_never_blocks_and_keeps_the_log_tail(settings, user, trainers_file):
    settings.TUNIX_RT = {**settings.TUNIX_RT, "LOG_MAX_LINES": 1000}
    code = (
        "import json, sys\n"
        "for i in range(20000):\n"
        "    print('x' * 100, i, file=sys.stderr)\n"
        "    print('y' * 100, i)\n"
        "print(json.dumps({'evaluation': {'score': 1.0}, 'primary': 'score'}))\n"
    )
    trainers_file(command_toml(code))
    run = services.run_create(owner=user, trainer="script", dataset="none", enqueue=False)

    run = execute_run(run.pk)

    assert run.status == Run.Status.SUCCEEDED, run.error_message
    assert LogLine.objects.filter(run=run).count() == 1000
    assert run.log_lines_dropped > 39_000
    assert run.log_lines.filter(stream="stdout", text__endswith=" 19999").exists()


@pytest.mark.parametrize(
    "line, error",
    [
        ('{"metrics": {"loss": "high"}, "step": 1}', "metric 'loss' must be a finite number"),
        ('{"metrics": {"loss": NaN}, "step": 1}', "metric 'loss' must be a finite number"),
        ('{"metrics": {"loss": 1}}', '"step" must be an integer >= 0'),
        ('{"metrics": {"loss": 1}, "step": 1, "epoch": 1}', "unknown key(s) ['epoch']"),
        ('{"evaluation": {"acc": 1}, "primary": "loss"}', '"primary" must name one of the evaluation metrics'),
        ('{"evaluation": {}, "primary": "loss"}', '"evaluation metric" must be a non-empty object'),
    ],
)
@pytest.mark.django_db
def test_protocol_errors_fail_the_run_naming_the_line(user, trainers_file, line, error):
    trainers_file(command_toml(f"print('not json {{'); print({line!r})"))
    run = services.run_create(owner=user, trainer="script", dataset="none", enqueue=False)

    run = execute_run(run.pk)

    assert run.status == Run.Status.FAILED
    assert run.error_message.startswith("protocol error on stdout line 2: ")
    assert error in run.error_message


@pytest.mark.django_db
def test_missing_executable_fails_the_run(user, trainers_file):
    trainers_file('[trainers.ghost]\nargv = ["/nonexistent/train"]\ndatasets = ["none"]\n')
    run = execute_run(services.run_create(owner=user, trainer="ghost", dataset="none", enqueue=False).pk)

    assert run.status == Run.Status.FAILED
    assert run.error_message.startswith("cannot start '/nonexistent/train'")


def test_example_file_declares_the_quadratic_trainer():
    (trainer,) = parse_command_trainers(ROOT / "trainers.toml")
    assert trainer.name == "quadratic"
    assert trainer.argv == (sys.executable, str(QUADRATIC))
    assert {p.name for p in trainer.hyperparameters} >= {
        "learning_rate",
        "epochs",
        "crash_at_epoch",
        "sleep_s",
        "spawn",
    }
    assert trainer.expected_steps({"epochs": 7}) == 7


def test_hyperparameters_are_validated_like_any_trainer(trainers_file):
    trainers_file(quadratic_toml())
    from tunix_rt.exceptions import ValidationError

    with pytest.raises(ValidationError) as info:
        get_trainer("quadratic").validate(dataset="bowl", hyperparameters={"spawn": "daemon", "epochs": 0})
    assert set(info.value.errors["hyperparameters"]) == {"spawn", "epochs"}


@pytest.mark.parametrize(
    "text, error",
    [
        ("[trainers.x\n", "not valid TOML"),
        ("[other]\n", "unknown top-level key(s) ['other']"),
        ('[trainers.x]\ndatasets = ["d"]\n', "trainers.x.argv: is required"),
        ('[trainers.x]\nargv = []\ndatasets = ["d"]\n', "trainers.x.argv: must not be empty"),
        ('[trainers.x]\nargv = "train.sh"\ndatasets = ["d"]\n', "trainers.x.argv: must be a list"),
        ('[trainers.x]\nargv = ["t"]\ndatasets = ["d", "d"]\n', "trainers.x.datasets: has duplicates"),
        ('[trainers.x]\nargv = ["t"]\ndatasets = ["d"]\ncommand = "t"\n', "trainers.x: unknown key(s) ['command']"),
        ('[trainers.X]\nargv = ["t"]\ndatasets = ["d"]\n', "trainers.X: the name must be"),
        ('[trainers.x]\nargv = ["t"]\ndatasets = ["d"]\ndefault_mode = "up"\n', "default_mode: must be 'max' or 'min'"),
        ('[trainers.x]\nargv = ["t"]\ndatasets = ["d"]\ntimeout_s = 0\n', "timeout_s: must be a positive number"),
        ('[trainers.x]\nargv = ["t"]\ndatasets = ["d"]\ntimeout_s = true\n', "timeout_s: must be a number"),
        ('[trainers.x]\nargv = ["t"]\ndatasets = ["d"]\nenv = {TUNIX_RT_RUN_ID = "1"}\n', "env.TUNIX_RT_RUN_ID"),
        (
            '[trainers.x]\nargv = ["t"]\ndatasets = ["d"]\n[[trainers.x.hyperparameters]]\n'
            'name = "lr"\ntype = "float"\n',
            "trainers.x.hyperparameters[0].default: is required",
        ),
        (
            '[trainers.x]\nargv = ["t"]\ndatasets = ["d"]\n[[trainers.x.hyperparameters]]\n'
            'name = "lr"\ntype = "float"\ndefault = 2.0\nhigh = 1.0\n',
            "trainers.x.hyperparameters[0].default: must be <= 1.0, got 2.0",
        ),
        (
            '[trainers.x]\nargv = ["t"]\ndatasets = ["d"]\n[[trainers.x.hyperparameters]]\n'
            'name = "lr"\ntype = "double"\ndefault = 2.0\n',
            "trainers.x.hyperparameters[0].type: must be one of",
        ),
        (
            '[trainers.x]\nargv = ["t"]\ndatasets = ["d"]\n[[trainers.x.hyperparameters]]\n'
            'name = "n"\ntype = "int"\ndefault = 1\nsteps = 2\n',
            "trainers.x.hyperparameters[0]: unknown key(s) ['steps']",
        ),
        (
            '[trainers.x]\nargv = ["t"]\ndatasets = ["d"]\n[[trainers.x.hyperparameters]]\nname = "a-b"\n'
            'type = "int"\ndefault = 1\n',
            "hyperparameters[0].name: 'a-b' must be an identifier",
        ),
        (
            '[trainers.x]\nargv = ["t"]\ndatasets = ["d"]\n[[trainers.x.hyperparameters]]\nname = "n"\n'
            'type = "int"\ndefault = 1\n[[trainers.x.hyperparameters]]\nname = "n"\ntype = "int"\ndefault = 1\n',
            "'n' is declared twice",
        ),
        (
            '[trainers.x]\nargv = ["t"]\ndatasets = ["d"]\n[[trainers.x.hyperparameters]]\nname = "m"\n'
            'type = "str"\ndefault = "a"\nchoices = ["a", 1]\n',
            "hyperparameters[0].choices: each must be a string",
        ),
    ],
)
def test_invalid_trainers_file_is_rejected_with_a_clear_error(tmp_path, text, error):
    path = tmp_path / "trainers.toml"
    path.write_text(text)
    with pytest.raises(CommandTrainerConfigError) as info:
        parse_command_trainers(path)
    assert str(info.value).startswith(str(path))
    assert error in str(info.value)


def test_missing_trainers_file_is_an_error_and_an_empty_setting_disables_it(settings, tmp_path):
    from runs.trainers.command import load_command_trainers

    settings.TUNIX_RT = {**settings.TUNIX_RT, "COMMAND_TRAINERS_FILE": str(tmp_path / "absent.toml")}
    with pytest.raises(CommandTrainerConfigError, match="command trainers file not found"):
        load_command_trainers()
    settings.TUNIX_RT = {**settings.TUNIX_RT, "COMMAND_TRAINERS_FILE": ""}
    assert load_command_trainers() == []


def test_system_check_reports_an_invalid_trainers_file(trainers_file):
    from runs.checks import trainers_load

    assert trainers_load(None) == []
    path = trainers_file('[trainers.x]\nargv = ["t"]\n')

    (error,) = trainers_load(None)

    assert error.id == "runs.E001"
    assert f"{path}: trainers.x.datasets: is required" in error.msg


@pytest.mark.django_db
def test_metric_points_past_the_limit_are_not_stored_and_the_log_says_so(settings, user):
    settings.TUNIX_RT = {**settings.TUNIX_RT, "METRIC_MAX_POINTS": 5}

    run = execute_run(run_quadratic(user, epochs=8).pk)

    assert run.status == Run.Status.SUCCEEDED
    assert list(run.metric_points.values_list("step", flat=True)) == [1, 2, 3, 4, 5]
    assert run.log_lines.filter(stream="system", text__startswith="metric point limit reached (5 steps)").count() == 1
