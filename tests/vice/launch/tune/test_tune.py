"""vice-tune without SLURM: study files, the search space, the seeded sampler, storage, executor settings,
and the best trial's experiment file composing back to the trial's values."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from vice.launch.app import SWEEPS_DIR
from vice.launch.tune.executor import executor_params
from vice.launch.tune.space import ParamConfig, suggest, trial_overrides
from vice.launch.tune.study import StudyError, build_sampler, build_storage, load_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def asked_params(seed: int, num_trials: int = 8) -> list[dict[str, object]]:
    """The params a smoke study asks, telling each trial a value that depends on its params only."""
    _, cfg = load_study("smoke")
    cfg.sampler.seed = seed
    study = optuna.create_study(sampler=build_sampler(cfg), direction=cfg.direction)
    asked = []
    for _ in range(num_trials):
        trial = study.ask()
        values = suggest(trial, cfg.params)
        study.tell(trial, values["views.mask_ratio"] - values["optim.base_lr"])
        asked.append(values)
    return asked


def test_the_sampler_seed_makes_the_asked_params_reproducible_past_the_startup_trials() -> None:
    first, again, other = asked_params(0), asked_params(0), asked_params(1)
    assert first == again  # 3 random startup trials, then 5 from the TPE model
    assert first != other
    for values in first:  # the conditional key is searched exactly when the queue is on
        assert ("swav.queue_start_step" in values) == (values["swav.queue_length"] == 8)
        assert 0.0 <= values["views.mask_ratio"] <= 0.5 and 4 <= values["swav.num_prototypes"] <= 16


def test_list_choices_become_hydra_list_overrides() -> None:
    _, cfg = load_study("appendix_b")
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"views.resize_range": ["[0.5,2.0]"]}))
    trial = study.ask()
    values = suggest(trial, {"views.resize_range": cfg.params["views.resize_range"]})
    assert trial_overrides(values) == ["views.resize_range=[0.5,2.0]"]


def write_study(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text("experiment: table5_hparams_smoke\n" + text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("n_trial: 3\n", "n_trial"),
        (
            "params:\n  swav.queue_start_step: {type: int, low: 0, high: 2, when: {swav.queue_length: [8]}}\n",
            "params.swav.queue_start_step: when names 'swav.queue_length', which is not a param listed before",
        ),
        ("params:\n  views.mask_ratio: {type: float, low: 0.5, high: 0.5}\n", "needs low < high"),
        (
            "sampler: {name: grid}\nparams:\n  views.mask_ratio: {type: float, low: 0, high: 1}\n",
            "the grid sampler takes unconditional categoricals only",
        ),
    ],
)
def test_a_bad_study_file_is_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(StudyError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_study(write_study(tmp_path, text))


def test_storage_is_a_journal_file_by_default_and_never_sqlite(tmp_path: Path) -> None:
    storage = build_storage(None, tmp_path / "study")
    optuna.create_study(study_name="s", storage=storage)
    assert (tmp_path / "study" / "optuna.journal").stat().st_size > 0
    with pytest.raises(StudyError, match="SQLite breaks with parallel writers"):
        build_storage(f"sqlite:///{tmp_path}/o.db", tmp_path)


def launcher_preset(name: str) -> dict[str, object]:
    from hydra import compose, initialize_config_dir

    from vice.config import register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name="t"):
        master = compose(
            "config",
            overrides=[f"hydra/launcher={name}", "experiment=table5_hparams_smoke"],
            return_hydra_config=True,
        )
    found = OmegaConf.to_container(master.hydra.launcher, resolve=True)
    assert isinstance(found, dict)
    return {str(k): v for k, v in found.items()}


def test_executor_params_from_the_v100_preset() -> None:
    cluster, init, update = executor_params(launcher_preset("v100"))
    assert cluster == "slurm" and init == {"slurm_max_num_timeout": 3}
    assert update["timeout_min"] == 1440 and update["gpus_per_node"] == 1 and update["cpus_per_task"] == 10
    assert update["slurm_signal_delay_s"] == 300 and update["slurm_setup"] == ["true"]
    assert "slurm_partition" not in update  # unset site settings are left to SLURM's defaults
    cluster, init, update = executor_params(launcher_preset("local"))
    assert cluster == "local" and init == {} and update["gpus_per_node"] == 0


def test_best_experiment_file_composes_to_the_best_trials_values(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from vice.config import register_schema, to_config
    from vice.launch.sweep.compose import Composer
    from vice.launch.tune.driver import StudySession
    from vice.launch.tune.results import best_experiment

    _, cfg = load_study("smoke")
    study = optuna.create_study(direction="maximize")
    best = {
        "views.mask_ratio": 0.125,
        "swav.num_prototypes": 5,
        "swav.queue_length": 8,
        "optim.base_lr": 0.25,
    }
    study.enqueue_trial(best)
    study.enqueue_trial({**best, "views.mask_ratio": 0.375})
    for value in (0.5, 0.25):
        trial = study.ask()
        suggest(trial, {k: cfg.params[k] for k in best})
        study.tell(trial, value)
    register_schema()
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name="t"):
        master = compose("config", overrides=["experiment=table5_hparams_smoke"], return_hydra_config=True)
        session = StudySession(
            "tune_x", cfg, study, tmp_path, Composer(), master, list(cfg.overrides), "", "", "local", None
        )
        name, text = best_experiment(session)
    assert name == "tune_x_best_smoke"
    config_dir = tmp_path / "sweeps"
    shutil.copytree(SWEEPS_DIR, config_dir)
    (config_dir / "experiment" / f"{name}.yaml").write_text(text)
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name="t"):
        job = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
    composed = to_config({k: v for k, v in job.items() if k != "hydra"})
    assert composed.experiment == name and composed.seed == 0
    assert composed.views.mask_ratio == 0.125 and composed.swav.num_prototypes == 5
    assert composed.swav.queue_length == 8 and composed.optim.base_lr == 0.25
    assert composed.train.max_steps == 4 and composed.eval.num_clusters == [7]
    assert composed.data.name == "synthetic"  # the base experiment's defaults came along
    assert dict(job.hydra.sweeper.params) == {"cell/table5_hparams": "baseline", "seed": "0"}


class FakeJob:
    job_id = "1"

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self, check: bool = True) -> None:
        self.cancelled = True


@pytest.mark.parametrize(("value", "pruned"), [(0.1, True), (0.9, False)])
def test_an_intermediate_evaluation_below_the_median_cancels_the_job_and_prunes_the_trial(
    tmp_path: Path, value: float, pruned: bool
) -> None:
    from mlflow.tracking import MlflowClient

    from vice.launch.tracking.names import RUN_ID_FILE
    from vice.launch.tracking.write import prepare_tracking
    from vice.launch.tune.driver import InFlight, StudySession, report_intermediate

    _, cfg = load_study("smoke")
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    dist = optuna.distributions.FloatDistribution(0.0, 0.5)
    study.add_trial(
        optuna.trial.create_trial(
            params={"views.mask_ratio": 0.2},
            distributions={"views.mask_ratio": dist},
            value=0.5,
            intermediate_values={2: 0.5},
        )
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(prepare_tracking(uri, "tune_x")).info.run_id
    client.log_metric(run_id, "eval/linear_miou", value, step=2)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / RUN_ID_FILE).write_text(run_id)
    trial = study.ask({"views.mask_ratio": dist})
    session = StudySession("tune_x", cfg, study, tmp_path, None, None, [], uri, "", "slurm", None)  # type: ignore[arg-type]
    flight = InFlight(trial, FakeJob(), run_dir)

    assert report_intermediate(session, flight) is pruned
    assert flight.job.cancelled is pruned and flight.last_step == 2
    frozen = study.trials[-1]
    assert frozen.intermediate_values == {2: value}
    assert frozen.state.name == ("PRUNED" if pruned else "RUNNING")
    tags = client.get_run(run_id).data.tags
    assert tags["optuna.trial"] == "1" and tags["optuna.state"] == ("PRUNED" if pruned else "RUNNING")
    assert tags["mlflow.runName"] == "trial 1"


def test_runs_of_trials_finished_by_a_killed_driver_are_retagged_with_their_last_trials_state(
    tmp_path: Path,
) -> None:
    """A driver killed between ``tell`` and tagging leaves runs tagged RUNNING; the next driver fixes them.

    Trial 0 failed and trial 1 retried it into the same run (trial 1's state wins); trial 2 completed
    its own run; trial 3 is still running and keeps its tag.
    """
    from mlflow.tracking import MlflowClient

    from vice.launch.tracking.names import RUN_ID_FILE
    from vice.launch.tracking.write import prepare_tracking
    from vice.launch.tune.driver import ATTR_JOB_ID, ATTR_RUN_DIR, StudySession, sync_tags

    _, cfg = load_study("smoke")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = prepare_tracking(uri, "tune_x")
    run_ids = []
    for name in ("a", "b", "c"):
        run_id = client.create_run(experiment_id).info.run_id
        client.set_tag(run_id, "optuna.state", "RUNNING")
        (tmp_path / name).mkdir()
        (tmp_path / name / RUN_ID_FILE).write_text(run_id)
        run_ids.append(run_id)
    study = optuna.create_study(direction="maximize")
    dist = {"views.mask_ratio": optuna.distributions.FloatDistribution(0.0, 0.5)}
    for run_name, state, value in (("a", "FAIL", None), ("a", "COMPLETE", 0.25), ("b", "COMPLETE", 0.5)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"views.mask_ratio": 0.125},
                distributions=dist,
                value=value,
                state=optuna.trial.TrialState[state],
                user_attrs={ATTR_RUN_DIR: str(tmp_path / run_name), ATTR_JOB_ID: "7"},
            )
        )
    running = study.ask(dist)
    running.set_user_attr(ATTR_RUN_DIR, str(tmp_path / "c"))
    running.set_user_attr(ATTR_JOB_ID, "8")
    session = StudySession("tune_x", cfg, study, tmp_path, None, None, [], uri, "", "slurm", None)  # type: ignore[arg-type]

    assert sync_tags(session) == 2
    tags = [client.get_run(run_id).data.tags for run_id in run_ids]
    assert [t["optuna.state"] for t in tags] == ["COMPLETE", "COMPLETE", "RUNNING"]
    assert [t.get("optuna.trial") for t in tags] == ["1", "2", None]
    assert tags[0]["optuna.param.views.mask_ratio"] == "0.125" and tags[1]["mlflow.runName"] == "trial 2"
    assert sync_tags(session) == 0


def test_a_resumed_study_does_not_ask_its_startup_trials_again() -> None:
    """A restarted driver re-creates the sampler: seeded with the study's seed alone, it repeats itself."""
    from vice.launch.tune.study import build_sampler

    _, cfg = load_study("smoke")

    def ask(study: optuna.Study, n: int) -> list[dict[str, object]]:
        asked = []
        for _ in range(n):
            trial = study.ask()
            asked.append(suggest(trial, cfg.params))
            study.tell(trial, 0.0)
        return asked

    def restarted(num_existing: int | None) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        """A driver that asks one startup trial, dies, and a new driver that asks one more."""
        study = optuna.create_study(direction="maximize", sampler=build_sampler(cfg))
        before = ask(study, 1)
        study.sampler = build_sampler(cfg, *([] if num_existing is None else [num_existing]))
        return before, ask(study, 1)

    first, repeated = restarted(None)  # seeded with the study's seed alone: the same values again
    assert repeated == first
    first, resumed = restarted(1)
    assert resumed != first
    assert restarted(1) == (first, resumed)  # still reproducible from the seed and the trial count


class DoneJob(FakeJob):
    def done(self) -> bool:
        return True


def test_the_final_evaluation_is_never_reported_as_intermediate(tmp_path: Path) -> None:
    """The job logs eval/linear_miou at step 2 (intermediate) and at max_steps = 4 (its final value)."""
    from mlflow.tracking import MlflowClient

    from vice.launch.tracking.names import RUN_ID_FILE
    from vice.launch.tracking.write import prepare_tracking
    from vice.launch.tune.driver import InFlight, StudySession, report_intermediate

    _, cfg = load_study("smoke")
    dist = optuna.distributions.FloatDistribution(0.0, 0.5)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    study.add_trial(
        optuna.trial.create_trial(
            params={"views.mask_ratio": 0.2},
            distributions={"views.mask_ratio": dist},
            value=0.5,
            intermediate_values={2: 0.5, 4: 0.5},
        )
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(prepare_tracking(uri, "tune_x")).info.run_id
    client.log_metric(run_id, "eval/linear_miou", 0.6, step=2)
    client.log_metric(run_id, "eval/linear_miou", 0.1, step=4)  # below the median, but final
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / RUN_ID_FILE).write_text(run_id)
    session = StudySession("tune_x", cfg, study, tmp_path, None, None, [], uri, "", "slurm", None)  # type: ignore[arg-type]
    flight = InFlight(study.ask({"views.mask_ratio": dist}), DoneJob(), run_dir, final_step=4)

    assert report_intermediate(session, flight, may_prune=False) is False
    assert study.trials[-1].intermediate_values == {2: 0.6}
    assert flight.job.cancelled is False and study.trials[-1].state.name == "RUNNING"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (None, None),  # the shipped study composes
        ({"params": {"views.mask_ratoi": {"type": "float", "low": 0.0, "high": 0.5}}}, "mask_ratoi"),
        (
            {"params": {"views.mask_ratio": {"type": "float", "low": -0.5, "high": 0.5}}},
            "views.mask_ratio=-0.5",
        ),
        ({"metric": "eval/linear_mIoU"}, "metric='eval/linear_mIoU' is not logged by these jobs"),
        ({"metric": "eval/cluster27_majority_miou"}, "with C in eval.num_clusters=[7]"),
        ({"pruner": {"name": "median"}}, "pruner.name=median needs intermediate evaluations"),
    ],
)
def test_the_search_space_and_objective_are_checked_before_any_trial(
    edit: object, message: str | None
) -> None:
    import dataclasses

    from hydra import initialize_config_dir

    from vice.config import register_schema
    from vice.launch.sweep.compose import Composer
    from vice.launch.tune.study import PrunerConfig, check_search_space

    _, cfg = load_study("smoke")
    if isinstance(edit, dict) and "params" in edit:
        cfg.params = {k: ParamConfig(**v) for k, v in edit["params"].items()}
    elif isinstance(edit, dict) and "metric" in edit:
        cfg.metric = edit["metric"]
    elif isinstance(edit, dict):
        cfg.pruner = dataclasses.replace(PrunerConfig(), name="median")
    register_schema()
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name="t"):
        base = ["experiment=table5_hparams_smoke", *cfg.overrides]
        if message is None:
            check_search_space(cfg, "smoke", Composer(), base)
            return
        with pytest.raises(StudyError) as error:
            check_search_space(cfg, "smoke", Composer(), base)
    assert message in str(error.value)


def test_a_second_driver_stops_before_touching_the_storage_or_mlflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vice.launch.tune.cli import driver_lock, main

    study_dir = tmp_path / "tune_smoke"
    with driver_lock(study_dir):
        assert main(["smoke", "--launcher", "local", "--output-dir", str(tmp_path)]) == 2
    assert "drives this study" in capsys.readouterr().err
    assert sorted(p.name for p in study_dir.iterdir()) == ["driver.lock"]
    assert not (tmp_path / "mlflow.db").exists()
